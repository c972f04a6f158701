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
    out = new Group{store, be, std::move(hb), timeout, rank, world};
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
