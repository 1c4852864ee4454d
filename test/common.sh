# test/common.sh: shell helpers the OpenCL test scripts share (sourced).

# exits 0 with a SKIP line when there is no OpenCL platform (or the build has
# no OpenCL); exits 1 when `ivae devices` fails for another reason.
# Needs $OUT (a folder for the log) and a function bad().
require_device() {
    if ! ./ivae devices > "$OUT/devices.log" 2>&1; then
        if grep -q -e "no OpenCL platform" -e "built without OpenCL" "$OUT/devices.log"; then
            echo "SKIP: $(tail -n 1 "$OUT/devices.log" | sed 's/^ivae: error: devices: //')"
            exit 0
        fi
        cat "$OUT/devices.log"
        bad "ivae devices"
        exit 1
    fi
}
