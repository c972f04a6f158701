// The c10d shim: a C ABI over PyTorch's own distributed engine, for the Rust trainer.
//
// Owns the rendezvous (a TCPStore on MASTER_ADDR:MASTER_PORT, hosted by rank 0 unless the
// launcher hosts it), the process group's backend (Gloo; NCCL from nccl.cpp where built),
// the collectives the trainer uses, on tensors passed as `at::Tensor*` (what tch's
// `C_tensor` is) and changed in place, and a heartbeat every rank writes to the store so
// that a rank whose collective failed can tell which peers are gone. Every C++ exception
// stops at this boundary: a call returns -1 (or null) and `pmv_c10d_last_error` says why.
// It never decides what a failure means for training (the Rust side does).

#include "shim.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

thread_local std::string last_error;

template <class F>
int guard(F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    // what() would append a C++ stack trace.
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

std::string beat_key(int rank) { return "beat/" + std::to_string(rank); }

// Writes "<beats> <progress>" under beat/<rank> every second, on its own store
// connection, until stopped. A store that has gone away (its host died) is not this
// thread's to report: the failed collective is.
class Heartbeat {
 public:
  Heartbeat(c10::intrusive_ptr<c10d::Store> store, int rank)
      : store_(std::move(store)), rank_(rank), thread_([this] { run(); }) {}
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  std::atomic<int64_t> progress{0};

 private:
  void run() {
    int64_t beats = 0;
    std::unique_lock<std::mutex> l(mu_);
    while (!stop_) {
      l.unlock();
      try {
        ++beats;
        std::string v = std::to_string(beats) + " " + std::to_string(progress.load());
        store_->set(beat_key(rank_), std::vector<uint8_t>(v.begin(), v.end()));
      } catch (...) {
      }
      l.lock();
      cv_.wait_for(l, std::chrono::seconds(1), [this] { return stop_; });
    }
  }
  c10::intrusive_ptr<c10d::Store> store_;
  int rank_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::unique_ptr<Heartbeat> heartbeat;
  std::chrono::milliseconds timeout;
  int rank;
  int world;
  bool nccl;
  ~Group() {
    heartbeat.reset();
    backend.reset();
  }
};

// A store connection; with `join`, it counts as one of the `world` ranks the server waits
// for (the heartbeat's second connection does not).
c10::intrusive_ptr<c10d::Store> connect(const std::string& addr, int port, bool server, bool join,
                                        int world, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = server;
  o.numWorkers = join ? std::optional<std::size_t>(world) : std::nullopt;
  o.waitWorkers = join;
  o.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(addr, o);
}

void wait(Group* g, const c10::intrusive_ptr<c10d::Work>& w) { w->wait(g->timeout); }

std::vector<at::Tensor> one(at::Tensor* t) { return std::vector<at::Tensor>{*t}; }

void sum_across(Group* g, at::Tensor& t) {
  if (!g->nccl && t.is_cuda()) {
    // Gloo's CUDA paths are not in every build: through the host.
    auto host = t.cpu();
    sum_across(g, host);
    t.copy_(host);
    return;
  }
  std::vector<at::Tensor> v{t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = g->timeout;
  wait(g, g->backend->allreduce(v, o));
}

// Every dimension but the channels (1) of a [N, C, ...] tensor.
std::vector<int64_t> reduced_dims(const at::Tensor& x) {
  std::vector<int64_t> d{0};
  for (int64_t i = 2; i < x.dim(); ++i) d.push_back(i);
  return d;
}

at::Tensor per_channel(const at::Tensor& v, const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = v.size(0);
  return v.view(shape);
}

// Batch norm over every rank's batch (training mode): the forward adds up each channel's
// count, sum and sum of squares across ranks; the backward adds up the sums of the
// output gradient and of its product with the normalised input, so each rank's input
// gradient is the one a single process with every rank's batch would compute. The
// weight and bias gradients stay this rank's (data-parallel averaging adds them up).
// Statistics in fp32 whatever the input's type.
struct SyncBatchNorm : public torch::autograd::Function<SyncBatchNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias,
                            at::Tensor running_mean, at::Tensor running_var, double eps,
                            double momentum, int64_t group) {
    auto* g = reinterpret_cast<Group*>(group);
    auto dims = reduced_dims(x);
    auto xf = x.to(at::kFloat);
    int64_t channels = x.size(1);
    double local = static_cast<double>(x.numel() / std::max<int64_t>(channels, 1));
    auto stats = at::cat({xf.sum(dims), xf.square().sum(dims),
                          at::full({1}, local, xf.options())});
    sum_across(g, stats);
    auto count = stats[2 * channels].item<double>();
    auto mean = stats.narrow(0, 0, channels) / count;
    auto var = (stats.narrow(0, channels, channels) / count - mean.square()).clamp_min(0);
    auto invstd = (var + eps).rsqrt();
    if (running_mean.defined() && running_var.defined()) {
      at::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      auto unbiased = var * (count / std::max(count - 1, 1.0));
      running_var.mul_(1 - momentum).add_(unbiased.to(running_var.scalar_type()), momentum);
    }
    auto y = (xf - per_channel(mean, x)) * per_channel(invstd, x);
    if (weight.defined()) y = y * per_channel(weight.to(at::kFloat), x);
    if (bias.defined()) y = y + per_channel(bias.to(at::kFloat), x);
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["group"] = group;
    ctx->saved_data["count"] = count;
    ctx->saved_data["has_bias"] = bias.defined();
    return y.to(x.scalar_type());
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    auto x = saved[0], weight = saved[1], mean = saved[2], invstd = saved[3];
    auto* g = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    double count = ctx->saved_data["count"].toDouble();
    auto dims = reduced_dims(x);
    auto dy = grads[0].to(at::kFloat);
    auto xhat = (x.to(at::kFloat) - per_channel(mean, x)) * per_channel(invstd, x);
    auto sum_dy = dy.sum(dims);
    auto sum_dy_xhat = (dy * xhat).sum(dims);
    at::Tensor grad_weight, grad_bias;
    if (weight.defined()) grad_weight = sum_dy_xhat.to(weight.scalar_type());
    if (ctx->saved_data["has_bias"].toBool()) grad_bias = sum_dy.to(at::kFloat);
    auto both = at::cat({sum_dy, sum_dy_xhat});
    sum_across(g, both);
    int64_t channels = mean.size(0);
    auto mean_dy = both.narrow(0, 0, channels) / count;
    auto mean_dy_xhat = both.narrow(0, channels, channels) / count;
    auto scale = invstd;
    if (weight.defined()) scale = scale * weight.to(at::kFloat);
    auto dx = (dy - per_channel(mean_dy, x) - xhat * per_channel(mean_dy_xhat, x)) *
              per_channel(scale, x);
    return {dx.to(x.scalar_type()), grad_weight, grad_bias, at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

const char* pmv_c10d_last_error() { return last_error.c_str(); }

int pmv_c10d_has_nccl() {
#ifdef PMV_NCCL
  return 1;
#else
  return 0;
#endif
}

// Joins the group: rank 0 hosts the store unless `agent_store` (torchrun's agent hosts
// it), every rank waits up to `timeout_ms` for the others. `backend`: "gloo" or "nccl"
// (`device_index`: the CUDA device NCCL binds to). Null on failure.
void* pmv_c10d_join(const char* backend, const char* addr, int port, int agent_store, int rank,
                    int world, int device_index, int64_t timeout_ms) {
  Group* out = nullptr;
  guard([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = connect(addr, port, rank == 0 && !agent_store, true, world, timeout);
    auto store = c10::make_intrusive<c10d::PrefixStore>("pmv_data", tcp);
    // The first beat is written before the backend connects, so every rank that got this
    // far has one to read.
    auto beat_store = c10::make_intrusive<c10d::PrefixStore>(
        "pmv_data", connect(addr, port, false, false, world, std::chrono::milliseconds(5000)));
    auto hb = std::make_unique<Heartbeat>(beat_store, rank);
    std::string b(backend);
    c10::intrusive_ptr<c10d::Backend> be;
    if (b == "gloo") {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      // As torch.distributed: GLOO_SOCKET_IFNAME=eth0[,eth1] picks the interfaces, else
      // the address this host's name resolves to (loopback when there is none).
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname && *ifname) {
        std::string names(ifname);
        std::size_t p = 0;
        while (p <= names.size()) {
          std::size_t q = names.find(',', p);
          if (q == std::string::npos) q = names.size();
          if (q > p)
            opts->devices.push_back(
                c10d::ProcessGroupGloo::createDeviceForInterface(names.substr(p, q - p)));
          p = q + 1;
        }
      } else if (std::string(addr) == "127.0.0.1" || std::string(addr) == "localhost") {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      opts->threads = 2;
      be = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
    } else if (b == "nccl") {
#ifdef PMV_NCCL
      be = pmv_c10d::make_nccl(store, rank, world, device_index, timeout);
#else
      (void)device_index;
      throw std::runtime_error("this build has no NCCL (it was compiled without CUDA headers)");
#endif
    } else {
      throw std::runtime_error("unknown backend " + b);
    }
    out = new Group{store, be, std::move(hb), timeout, rank, world, b == "nccl"};
  });
  return out;
}

void pmv_c10d_free(void* g) { delete static_cast<Group*>(g); }

// op: 0 sum, 1 average, 2 maximum.
int pmv_c10d_all_reduce(void* h, at::Tensor* t, int op) {
  auto* g = static_cast<Group*>(h);
  return guard([&] {
    auto v = one(t);
    c10d::AllreduceOptions o;
    o.reduceOp = op == 0 ? c10d::ReduceOp::SUM
                         : (op == 1 ? c10d::ReduceOp::AVG : c10d::ReduceOp::MAX);
    o.timeout = g->timeout;
    wait(g, g->backend->allreduce(v, o));
  });
}

int pmv_c10d_broadcast(void* h, at::Tensor* t, int root) {
  auto* g = static_cast<Group*>(h);
  return guard([&] {
    auto v = one(t);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    o.timeout = g->timeout;
    wait(g, g->backend->broadcast(v, o));
  });
}

int pmv_c10d_barrier(void* h) {
  auto* g = static_cast<Group*>(h);
  return guard([&] {
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    wait(g, g->backend->barrier(o));
  });
}

// `out` holds world × numel(in) elements: rank r's tensor at r × numel(in).
int pmv_c10d_all_gather(void* h, at::Tensor* out, at::Tensor* in) {
  auto* g = static_cast<Group*>(h);
  return guard([&] {
    c10d::AllgatherOptions o;
    o.timeout = g->timeout;
    wait(g, g->backend->_allgather_base(*out, *in, o));
  });
}

// Training-mode batch norm of `x` ([N, C, ...]) over every rank's batch (see
// SyncBatchNorm). `weight`, `bias`, `running_mean`, `running_var` may be null. A new
// tensor, or null on failure.
at::Tensor* pmv_c10d_sync_batch_norm(void* h, at::Tensor* x, at::Tensor* weight, at::Tensor* bias,
                                     at::Tensor* running_mean, at::Tensor* running_var,
                                     double eps, double momentum) {
  at::Tensor* out = nullptr;
  guard([&] {
    auto t = [](at::Tensor* p) { return p ? *p : at::Tensor(); };
    auto y = SyncBatchNorm::apply(*x, t(weight), t(bias), t(running_mean), t(running_var), eps,
                                  momentum, reinterpret_cast<int64_t>(h));
    out = new at::Tensor(std::move(y));
  });
  return out;
}

// What this rank has done (the trainer's optimiser step), written with each heartbeat.
void pmv_c10d_set_progress(void* h, int64_t progress) {
  static_cast<Group*>(h)->heartbeat->progress.store(progress);
}

// Every rank's last heartbeat: beats[r] (-1: none to read) and progress[r]. -1 when the
// store itself cannot be reached.
int pmv_c10d_heartbeats(void* h, int64_t* beats, int64_t* progress) {
  auto* g = static_cast<Group*>(h);
  return guard([&] {
    for (int r = 0; r < g->world; ++r) {
      beats[r] = -1;
      progress[r] = -1;
      if (!g->store->check({beat_key(r)})) continue;
      auto v = g->store->get(beat_key(r));
      std::string s(v.begin(), v.end());
      auto space = s.find(' ');
      if (space == std::string::npos) continue;
      beats[r] = std::stoll(s.substr(0, space));
      progress[r] = std::stoll(s.substr(space + 1));
    }
  });
}

}  // extern "C"
