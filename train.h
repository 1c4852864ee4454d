/*
 * train.h: the training program (train.c), the commands `ivae train` and
 * `ivae eval`, and `ivae lessons` (lessons.c), which runs many trainings. Each takes the arguments after the command's name and returns
 * the exit status; errors end the process through die() (util.h).
 */
#ifndef TRAIN_H
#define TRAIN_H

int train_main(int argc, char **argv); /* ivae train: train the VAE on a dataset */
int eval_main(int argc, char **argv);  /* ivae eval: held-out PSNR and SSIM of a model */
int lessons_main(int argc, char **argv); /* ivae lessons (lessons.c): the seed's lessons as experiments */

#endif
