// What the two halves of the c10d shim share: shim.cpp (store, Gloo, collectives, the C
// ABI) and nccl.cpp (the NCCL backend, built only where CUDA and NCCL headers exist).
#pragma once

#include <chrono>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace pmv_c10d {

// The NCCL backend of `rank` in a group of `world` on `store`, bound to CUDA device
// `device_index`, with `timeout` for each collective. Throws (c10::Error or
// std::exception) with a message on failure.
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                            int rank, int world, int device_index,
                                            std::chrono::milliseconds timeout);

}  // namespace pmv_c10d
