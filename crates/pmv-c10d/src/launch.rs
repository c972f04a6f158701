//! Which rank this process is, from the launcher's environment (torchrun, Slurm, or
//! `--nproc`).
