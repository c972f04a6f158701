// The NCCL half of the c10d shim: makes the NCCL backend of one rank, bound to its CUDA
// device. It owns nothing else: the store, the collectives and the C ABI live in
// shim.cpp, which also catches what this file throws (it never catches, prints or exits).
//
// Built only where libtorch has CUDA and the CUDA and NCCL headers are found (build.rs),
// with -DUSE_C10D_NCCL -DUSE_CUDA: ProcessGroupNCCL.hpp is empty without them, and the
// layout of its Options depends on the nccl.h torch was built with.

#include "shim.h"

#include <chrono>
#include <string>

#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace pmv_c10d {

c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                            int rank, int world, int device_index,
                                            std::chrono::milliseconds timeout) {
  const int devices = c10::cuda::device_count();
  TORCH_CHECK(device_index >= 0 && device_index < devices, "rank ", rank,
              ": there is no CUDA device ", device_index, " for NCCL (this machine shows ",
              devices, "); each rank on a machine needs a GPU of its own");
  const auto index = static_cast<c10::DeviceIndex>(device_index);
  // NCCL's streams and communicator belong to the current device.
  c10::cuda::set_device(index);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  // The watchdog aborts a collective that has not finished within this time.
  opts->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
  // Create the communicator now, bound to this device, as Python's
  // init_process_group(device_id=...) does: a rank that cannot reach the others fails
  // here rather than in the first collective.
  pg->eagerConnectSingleDevice(at::Device(at::kCUDA, index));
  return pg;
}

}  // namespace pmv_c10d
