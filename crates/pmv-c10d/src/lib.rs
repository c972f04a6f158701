//! PyTorch's own distributed engine (c10d) for the trainer: the rendezvous store, Gloo
//! (CPU) and NCCL (CUDA) process groups, and the collectives data-parallel training
//! needs, on `tch` tensors in place.

pub mod launch;
