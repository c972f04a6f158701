//! PyTorch's own distributed engine (c10d) for the trainer: the rendezvous store, Gloo
//! (CPU) and NCCL (CUDA) process groups, and the collectives data-parallel training
//! needs, on `tch` tensors in place.
//!
//! Owns joining a group ([`Group::join`]), the collectives ([`Group::all_reduce`],
//! [`Group::broadcast`], [`Group::barrier`], [`Group::all_gather_rows`]), and what a
//! failed collective says: every rank writes a heartbeat to the store, so the rank that
//! sees a collective fail can name the ranks that stopped beating (a process that died)
//! or that beat but fell behind (a process that hangs). The work is libtorch's: a C++
//! shim (`shim/shim.cpp`) compiled against the wheel's c10d headers. It never decides
//! what to train or what a rank reads ([`launch`] reads the launcher's environment).

pub mod launch;

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

unsafe extern "C" {
    fn pmv_c10d_last_error() -> *const c_char;
    fn pmv_c10d_has_nccl() -> c_int;
    fn pmv_c10d_join(
        backend: *const c_char,
        addr: *const c_char,
        port: c_int,
        agent_store: c_int,
        rank: c_int,
        world: c_int,
        device_index: c_int,
        timeout_ms: i64,
    ) -> *mut c_void;
    fn pmv_c10d_free(g: *mut c_void);
    fn pmv_c10d_all_reduce(g: *mut c_void, t: *mut torch_sys::C_tensor, op: c_int) -> c_int;
    fn pmv_c10d_broadcast(g: *mut c_void, t: *mut torch_sys::C_tensor, root: c_int) -> c_int;
    fn pmv_c10d_barrier(g: *mut c_void) -> c_int;
    fn pmv_c10d_all_gather(
        g: *mut c_void,
        out: *mut torch_sys::C_tensor,
        input: *mut torch_sys::C_tensor,
    ) -> c_int;
    fn pmv_c10d_set_progress(g: *mut c_void, progress: i64);
    fn pmv_c10d_sync_batch_norm(
        g: *mut c_void,
        x: *mut torch_sys::C_tensor,
        weight: *mut torch_sys::C_tensor,
        bias: *mut torch_sys::C_tensor,
        running_mean: *mut torch_sys::C_tensor,
        running_var: *mut torch_sys::C_tensor,
        eps: f64,
        momentum: f64,
    ) -> *mut torch_sys::C_tensor;
    fn pmv_c10d_heartbeats(g: *mut c_void, beats: *mut i64, progress: *mut i64) -> c_int;
}

/// The shim's message for the last failed call on this thread.
fn last_error() -> String {
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string that
    // lives until the next failed call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(pmv_c10d_last_error()) }
        .to_string_lossy()
        .trim()
        .to_owned()
}

/// Whether this build can use NCCL (it was compiled with CUDA and NCCL headers).
pub fn has_nccl() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { pmv_c10d_has_nccl() != 0 }
}

/// Which engine moves the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors (and CUDA tensors, through host copies).
    Gloo,
    /// NCCL: CUDA tensors, one device per rank.
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// How values from every rank combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Avg,
    Max,
}

/// Where and how to join.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub rank: usize,
    pub world: usize,
    /// The store's host (rank 0's, or the launcher's) and port.
    pub master_addr: String,
    pub master_port: u16,
    /// The launcher hosts the store (torchrun), so rank 0 connects to it as a client.
    pub agent_store: bool,
    pub backend: Backend,
    /// The CUDA device NCCL binds to (ignored by Gloo).
    pub device_index: usize,
    /// How long joining, and then each collective, may wait for the other ranks.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error(
        "rank {rank} of {world} could not join the group at {addr}:{port} within {secs} s: {cause}"
    )]
    Join {
        rank: usize,
        world: usize,
        addr: String,
        port: u16,
        secs: u64,
        cause: String,
    },
    #[error("rank {rank}: {op} failed: {lost}: {cause}")]
    Lost {
        rank: usize,
        op: String,
        /// Which ranks are gone or stuck, in words.
        lost: String,
        /// The ranks named in `lost`.
        ranks: Vec<usize>,
        cause: String,
    },
    #[error("rank {rank}: {op}: {why}")]
    Mismatch {
        rank: usize,
        op: String,
        why: String,
    },
}

/// This process's membership of a group of ranks.
pub struct Group {
    raw: NonNull<c_void>,
    rank: usize,
    world: usize,
    backend: Backend,
    /// NCCL's CUDA device.
    device_index: usize,
    addr: String,
    port: u16,
    agent_store: bool,
}

// SAFETY: the shim's group is a c10d backend and store, which libtorch uses from several
// threads itself (its collectives queue work for its own threads); the heartbeat state
// is atomic.
unsafe impl Send for Group {}
// SAFETY: as above; every call goes through c10d's thread-safe backend.
unsafe impl Sync for Group {}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

impl Group {
    /// Joins the group: connects to the store (rank 0 hosts it unless the launcher
    /// does), waits for every rank, and connects the backend. Blocks up to the timeout.
    pub fn join(o: &JoinOptions) -> Result<Group, DistError> {
        let started = Instant::now();
        let join_error = |cause: String| DistError::Join {
            rank: o.rank,
            world: o.world,
            addr: o.master_addr.clone(),
            port: o.master_port,
            secs: o.timeout.as_secs(),
            cause,
        };
        if o.world == 0 || o.rank >= o.world {
            return Err(join_error(format!(
                "rank {} is not below the world size {}",
                o.rank, o.world
            )));
        }
        if o.backend == Backend::Nccl && !has_nccl() {
            return Err(join_error(
                "this build has no NCCL (it was compiled without the CUDA and NCCL headers)".into(),
            ));
        }
        let backend = cstring(o.backend.name());
        let addr = cstring(&o.master_addr);
        // SAFETY: valid NUL-terminated strings for the call's duration; the shim copies them.
        let raw = unsafe {
            pmv_c10d_join(
                backend.as_ptr(),
                addr.as_ptr(),
                c_int::from(o.master_port),
                c_int::from(o.agent_store),
                o.rank as c_int,
                o.world as c_int,
                o.device_index as c_int,
                o.timeout.as_millis().min(i64::MAX as u128) as i64,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| join_error(last_error()))?;
        let group = Group {
            raw,
            rank: o.rank,
            world: o.world,
            backend: o.backend,
            device_index: o.device_index,
            addr: o.master_addr.clone(),
            port: o.master_port,
            agent_store: o.agent_store,
        };
        tracing::debug!(
            "rank {} of {} joined {} at {}:{} in {:.2} s",
            o.rank,
            o.world,
            o.backend.name(),
            o.master_addr,
            o.master_port,
            started.elapsed().as_secs_f64()
        );
        Ok(group)
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Records what this rank has done (its optimiser step); peers read it when a
    /// collective fails, to tell a rank that hangs from one that moved on.
    pub fn set_progress(&self, progress: u64) {
        // SAFETY: `raw` is a live group.
        unsafe { pmv_c10d_set_progress(self.raw.as_ptr(), progress.min(i64::MAX as u64) as i64) }
    }

    /// Combines `t` across ranks, in place. Every rank must pass a tensor of the same
    /// size and kind (Gloo ends the process otherwise).
    pub fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<(), DistError> {
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
            ReduceOp::Max => 2,
        };
        let rc = self.in_place(t, |raw, t| {
            // SAFETY: `t` is a live tensor handle; the shim writes into its storage only.
            unsafe { pmv_c10d_all_reduce(raw, t.as_mut_ptr(), code) }
        });
        self.check(rc, "all-reduce")
    }

    /// Copies rank `root`'s `t` into every other rank's `t`.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        let rc = self.in_place(t, |raw, t| {
            // SAFETY: as in `all_reduce`.
            unsafe { pmv_c10d_broadcast(raw, t.as_mut_ptr(), root as c_int) }
        });
        self.check(rc, "broadcast")
    }

    /// The device the backend moves tensors on, for `t`: NCCL's CUDA device for a CPU
    /// tensor, the CPU for Gloo's CUDA tensors (Gloo's CUDA paths are not in every
    /// build); `None` when `t` can go as it is.
    fn staging(&self, t: &Tensor) -> Option<tch::Device> {
        match (self.backend, t.device()) {
            (Backend::Nccl, tch::Device::Cpu) => Some(tch::Device::Cuda(self.device_index)),
            (Backend::Gloo, tch::Device::Cuda(_)) => Some(tch::Device::Cpu),
            _ => None,
        }
    }

    /// Runs `op` on `t`, or on a copy on the backend's device that is then copied back
    /// into `t`. Returns the shim's status.
    fn in_place(
        &self,
        t: &mut Tensor,
        op: impl FnOnce(*mut c_void, &mut Tensor) -> c_int,
    ) -> c_int {
        let raw = self.raw.as_ptr();
        match self.staging(t) {
            None => op(raw, t),
            Some(device) => {
                let mut staged = t.to_device(device).contiguous();
                let rc = op(raw, &mut staged);
                if rc == 0 {
                    t.copy_(&staged);
                }
                rc
            }
        }
    }

    /// Waits until every rank has reached this call.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: `raw` is a live group.
        let rc = unsafe { pmv_c10d_barrier(self.raw.as_ptr()) };
        self.check(rc, "barrier")
    }

    /// Training-mode batch norm of `x` (`[N, C, ...]`) with the statistics of every
    /// rank's batch, as if one process held them all: the forward adds up each
    /// channel's count, sum and sum of squares across ranks (and updates the running
    /// statistics with them), the backward the sums its input gradient needs. Every
    /// rank must call it at the same point of the same model.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_batch_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        eps: f64,
        momentum: f64,
    ) -> Result<Tensor, DistError> {
        let ptr = |t: Option<&Tensor>| {
            t.map_or(std::ptr::null_mut(), |t| {
                t.as_ptr() as *mut torch_sys::C_tensor
            })
        };
        // SAFETY: live tensor handles (or null for absent ones); the shim reads them and
        // returns a new tensor it allocated, which `from_ptr` takes over.
        let out = unsafe {
            pmv_c10d_sync_batch_norm(
                self.raw.as_ptr(),
                x.as_ptr() as *mut torch_sys::C_tensor,
                ptr(weight),
                ptr(bias),
                ptr(running_mean),
                ptr(running_var),
                eps,
                momentum,
            )
        };
        if out.is_null() {
            self.check(-1, "batch norm statistics")?;
        }
        // SAFETY: non-null: a tensor the shim allocated with `new`, ours to own.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// Every rank's equal-sized `t`, stacked in rank order: `[world, ...t's shape]`.
    fn all_gather_equal(&self, t: &Tensor) -> Result<Tensor, DistError> {
        // The ranks' tensors end to end along the first dimension, on the backend's
        // device; the result comes back on `t`'s.
        let device = self.staging(t).unwrap_or(t.device());
        let mut input = t.to_device(device).contiguous().flatten(0, -1);
        let mut out = Tensor::empty(
            [self.world as i64 * input.numel() as i64],
            (t.kind(), device),
        );
        // SAFETY: both are live tensor handles; `out` is contiguous with world × numel(t)
        // elements, as the shim's `_allgather_base` needs.
        let rc =
            unsafe { pmv_c10d_all_gather(self.raw.as_ptr(), out.as_mut_ptr(), input.as_mut_ptr()) };
        self.check(rc, "all-gather")?;
        let mut shape = vec![self.world as i64];
        shape.extend(t.size());
        Ok(out.view(shape.as_slice()).to_device(t.device()))
    }

    /// Every rank's rows (`t`'s first dimension may differ between ranks; the rest, and
    /// the kind, may not), concatenated in rank order.
    pub fn all_gather_rows(&self, t: &Tensor) -> Result<Tensor, DistError> {
        Ok(Tensor::cat(&self.all_gather_parts(t)?, 0))
    }

    /// Every rank's rows, one tensor a rank, in rank order (as [`Group::all_gather_rows`]
    /// takes them). Two collectives: the shapes, then the rows padded to the longest.
    pub fn all_gather_parts(&self, t: &Tensor) -> Result<Vec<Tensor>, DistError> {
        const DIMS: usize = 8;
        let size = t.size();
        if size.is_empty() || size.len() > DIMS {
            return Err(self.mismatch(format!(
                "gathering rows needs a tensor of 1 to {DIMS} dimensions, not {}",
                size.len()
            )));
        }
        let mut desc = vec![0i64; DIMS + 2];
        desc[0] = size.len() as i64;
        desc[1] = kind_code(t.kind());
        desc[2..2 + size.len()].copy_from_slice(&size);
        let shapes = self.all_gather_equal(&Tensor::from_slice(&desc).to_device(t.device()))?;
        let shapes: Vec<i64> =
            Vec::<i64>::try_from(shapes.to_device(tch::Device::Cpu).flatten(0, -1))
                .map_err(|e| self.mismatch(e.to_string()))?;
        let rows: Vec<i64> = (0..self.world)
            .map(|r| shapes[r * (DIMS + 2) + 2])
            .collect();
        for r in 0..self.world {
            let d = &shapes[r * (DIMS + 2)..(r + 1) * (DIMS + 2)];
            if d[0] != desc[0] || d[1] != desc[1] || d[3..] != desc[3..] {
                return Err(self.mismatch(format!(
                    "rank {r} gathers rows of shape {:?} ({}), this rank {:?} ({:?})",
                    &d[3..2 + d[0].clamp(0, DIMS as i64) as usize],
                    kind_name(d[1]),
                    &size[1..],
                    t.kind()
                )));
            }
        }
        let longest = rows.iter().copied().max().unwrap_or(0);
        let mut padded_shape = size.clone();
        padded_shape[0] = longest;
        let padded = Tensor::zeros(padded_shape.as_slice(), (t.kind(), t.device()));
        if size[0] > 0 {
            padded.narrow(0, 0, size[0]).copy_(t);
        }
        let all = self.all_gather_equal(&padded)?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(r, &n)| all.get(r as i64).narrow(0, 0, n))
            .collect())
    }

    fn mismatch(&self, why: String) -> DistError {
        DistError::Mismatch {
            rank: self.rank,
            op: "all-gather".into(),
            why,
        }
    }

    /// Turns the shim's status into a result; a failure names the ranks that are gone
    /// or stuck.
    fn check(&self, rc: c_int, op: &str) -> Result<(), DistError> {
        if rc == 0 {
            return Ok(());
        }
        let cause = last_error();
        let (lost, ranks) = self.diagnose();
        Err(DistError::Lost {
            rank: self.rank,
            op: format!("{op} ({} backend)", self.backend.name()),
            lost,
            ranks,
            cause,
        })
    }

    /// Reads every rank's heartbeat twice, a few beats apart: a rank whose count did not
    /// move is gone; one that beats but reports less progress than this rank is stuck.
    fn diagnose(&self) -> (String, Vec<usize>) {
        let read = || -> Option<(Vec<i64>, Vec<i64>)> {
            let mut beats = vec![0i64; self.world];
            let mut progress = vec![0i64; self.world];
            // SAFETY: both buffers hold `world` values, as the shim writes.
            let rc = unsafe {
                pmv_c10d_heartbeats(self.raw.as_ptr(), beats.as_mut_ptr(), progress.as_mut_ptr())
            };
            (rc == 0).then_some((beats, progress))
        };
        let store_gone = || {
            let host = if self.agent_store {
                "the launcher".to_owned()
            } else {
                "rank 0".to_owned()
            };
            let ranks = if self.agent_store || self.rank == 0 {
                vec![]
            } else {
                vec![0]
            };
            (
                format!(
                    "the store at {}:{} is gone ({host} hosts it{})",
                    self.addr,
                    self.port,
                    if ranks.is_empty() {
                        ""
                    } else {
                        ": lost rank 0"
                    }
                ),
                ranks,
            )
        };
        let Some((first, _)) = read() else {
            return store_gone();
        };
        // Beats come every second: one that has not moved after 3.5 s has stopped.
        std::thread::sleep(Duration::from_millis(3500));
        let Some((second, progress)) = read() else {
            return store_gone();
        };
        let others = || (0..self.world).filter(|&r| r != self.rank);
        let dead: Vec<usize> = others()
            .filter(|&r| second[r] < 0 || second[r] == first[r])
            .collect();
        if !dead.is_empty() {
            return (
                format!("lost rank{} {} (it stopped)", plural(&dead), list(&dead)),
                dead,
            );
        }
        let mine = progress[self.rank];
        let behind: Vec<usize> = others().filter(|&r| progress[r] < mine).collect();
        if !behind.is_empty() {
            let at: Vec<String> = behind
                .iter()
                .map(|&r| format!("rank {r} at step {}", progress[r]))
                .collect();
            return (
                format!(
                    "lost rank{} {} (alive but not taking part: {}; this rank is at step {mine})",
                    plural(&behind),
                    list(&behind),
                    at.join(", ")
                ),
                behind,
            );
        }
        ("every rank is alive and at the same step".into(), vec![])
    }
}

fn plural(r: &[usize]) -> &'static str {
    if r.len() == 1 { "" } else { "s" }
}

fn list(r: &[usize]) -> String {
    r.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_code(k: Kind) -> i64 {
    match k {
        Kind::Uint8 => 0,
        Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::Bool => 11,
        Kind::BFloat16 => 15,
        _ => 99,
    }
}

fn kind_name(code: i64) -> String {
    match code {
        0 => "u8",
        1 => "i8",
        2 => "i16",
        3 => "i32",
        4 => "i64",
        5 => "f16",
        6 => "f32",
        7 => "f64",
        11 => "bool",
        15 => "bf16",
        _ => "another kind",
    }
    .to_owned()
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `pmv_c10d_join` and is freed once.
        unsafe { pmv_c10d_free(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    fn options(rank: usize, world: usize, port: u16, timeout: Duration) -> JoinOptions {
        JoinOptions {
            rank,
            world,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
            backend: Backend::Gloo,
            device_index: 0,
            timeout,
        }
    }

    /// Runs `f(group)` on `world` ranks, each a thread of this process.
    fn ranks<T: Send + 'static>(
        world: usize,
        timeout: Duration,
        f: impl Fn(Group) -> T + Send + Sync + Clone + 'static,
    ) -> Vec<T> {
        let port = free_port();
        let threads: Vec<_> = (0..world)
            .map(|r| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let g = Group::join(&options(r, world, port, timeout)).expect("join");
                    f(g)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("rank thread"))
            .collect()
    }

    #[test]
    fn collectives_combine_every_rank() {
        let out = ranks(3, Duration::from_secs(30), |g| {
            let r = g.rank() as f32;
            let mut sum = Tensor::from_slice(&[r, 1.0]);
            g.all_reduce(&mut sum, ReduceOp::Sum).unwrap();
            let mut avg = Tensor::from_slice(&[r, 2.0 * r]);
            g.all_reduce(&mut avg, ReduceOp::Avg).unwrap();
            let mut max = Tensor::from_slice(&[r as i64]);
            g.all_reduce(&mut max, ReduceOp::Max).unwrap();
            // A broadcast into a view changes that row only.
            let m = Tensor::full([2, 2], r as f64, (Kind::Float, tch::Device::Cpu));
            g.broadcast(&mut m.get(1), 2).unwrap();
            g.barrier().unwrap();
            // Rank r gives r rows of [r, r].
            let rows = Tensor::full([r as i64, 2], r as f64, (Kind::Float, tch::Device::Cpu));
            let gathered = g.all_gather_rows(&rows).unwrap();
            (
                Vec::<f32>::try_from(sum).unwrap(),
                Vec::<f32>::try_from(avg).unwrap(),
                i64::try_from(max).unwrap(),
                Vec::<f32>::try_from(m.flatten(0, -1)).unwrap(),
                Vec::<f32>::try_from(gathered.flatten(0, -1)).unwrap(),
            )
        });
        for (r, (sum, avg, max, m, gathered)) in out.into_iter().enumerate() {
            assert_eq!(sum, vec![3.0, 3.0]);
            assert_eq!(avg, vec![1.0, 2.0]);
            assert_eq!(max, 2);
            let r = r as f32;
            assert_eq!(m, vec![r, r, 2.0, 2.0]);
            assert_eq!(gathered, vec![1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
        }
    }

    /// Two ranks' synchronised batch norm gives each rank the output, and the input,
    /// weight and bias gradients, that one batch norm over both batches gives (the
    /// parameter gradients once added up across ranks, as data-parallel training does).
    #[test]
    fn synchronised_batch_norm_is_one_batch_norm_over_every_rank() {
        let opts = (Kind::Float, tch::Device::Cpu);
        tch::manual_seed(3);
        let x = Tensor::randn([4, 3, 2, 5], opts) * 2.0 + 1.0;
        let w0 = Tensor::randn([3], opts);
        let b0 = Tensor::randn([3], opts);
        let up = Tensor::randn([4, 3, 2, 5], opts);
        // One process, both halves.
        let xs = x.copy().set_requires_grad(true);
        let w = w0.copy().set_requires_grad(true);
        let b = b0.copy().set_requires_grad(true);
        let (rm, rv) = (Tensor::zeros([3], opts), Tensor::ones([3], opts));
        let y = Tensor::batch_norm(
            &xs,
            Some(&w),
            Some(&b),
            Some(&rm),
            Some(&rv),
            true,
            0.1,
            1e-5,
            false,
        );
        (&y * &up).sum(Kind::Float).backward();
        let want = (y.detach(), xs.grad(), w.grad(), b.grad(), rm, rv);
        // Tensors do not cross threads: their values do.
        let v = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        let (x2, w2, b2, up2) = (v(&x), v(&w0), v(&b0), v(&up));
        let out = ranks(2, Duration::from_secs(30), move |g| {
            let r = g.rank() as i64;
            let x2 = Tensor::from_slice(&x2).view([4, 3, 2, 5]);
            let up2 = Tensor::from_slice(&up2).view([4, 3, 2, 5]);
            let xs = x2.narrow(0, 2 * r, 2).copy().set_requires_grad(true);
            let w = Tensor::from_slice(&w2).set_requires_grad(true);
            let b = Tensor::from_slice(&b2).set_requires_grad(true);
            let (rm, rv) = (Tensor::zeros([3], opts), Tensor::ones([3], opts));
            let y = g
                .sync_batch_norm(&xs, Some(&w), Some(&b), Some(&rm), Some(&rv), 1e-5, 0.1)
                .unwrap();
            (&y * up2.narrow(0, 2 * r, 2)).sum(Kind::Float).backward();
            let (mut gw, mut gb) = (w.grad(), b.grad());
            g.all_reduce(&mut gw, ReduceOp::Sum).unwrap();
            g.all_reduce(&mut gb, ReduceOp::Sum).unwrap();
            [y.detach(), xs.grad(), gw, gb, rm, rv].map(|t| (v(&t), t.size()))
        });
        let t =
            |(data, size): &(Vec<f32>, Vec<i64>)| Tensor::from_slice(data).view(size.as_slice());
        let out: Vec<Vec<Tensor>> = out.iter().map(|o| o.iter().map(t).collect()).collect();
        let close = |a: &Tensor, b: &Tensor| {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-5, "max |Δ| {d}");
        };
        let y = Tensor::cat(&[&out[0][0], &out[1][0]], 0);
        let dx = Tensor::cat(&[&out[0][1], &out[1][1]], 0);
        close(&y, &want.0);
        close(&dx, &want.1);
        for o in &out {
            close(&o[2], &want.2);
            close(&o[3], &want.3);
            close(&o[4], &want.4);
            close(&o[5], &want.5);
        }
    }

    #[test]
    fn gathering_rows_of_other_shapes_is_refused() {
        let out = ranks(2, Duration::from_secs(30), |g| {
            let cols = 2 + g.rank() as i64;
            g.all_gather_rows(&Tensor::zeros([1, cols], (Kind::Float, tch::Device::Cpu)))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        for e in out {
            let e = e.unwrap_err();
            assert!(e.contains("gathers rows of shape"), "{e}");
        }
    }

    #[test]
    fn a_rank_that_stops_is_named() {
        let out = ranks(2, Duration::from_secs(30), |g| {
            if g.rank() == 1 {
                // The process of rank 1 "dies": its connections close, its heartbeat stops.
                drop(g);
                return None;
            }
            let started = Instant::now();
            let mut t = Tensor::ones([1000], (Kind::Float, tch::Device::Cpu));
            let err = g.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
            Some((err, started.elapsed()))
        });
        let (err, took) = out[0].as_ref().expect("rank 0 reports");
        let DistError::Lost { ranks, .. } = err else {
            panic!("{err}");
        };
        assert_eq!(ranks, &vec![1], "{err}");
        assert!(
            err.to_string().contains("lost rank 1 (it stopped)"),
            "{err}"
        );
        // Seen when the connection closes, not at the 30 s timeout.
        assert!(took < &Duration::from_secs(15), "{took:?}");
    }

    #[test]
    fn a_rank_that_hangs_is_named_at_the_timeout() {
        let out = ranks(2, Duration::from_secs(2), |g| {
            g.set_progress(7 + g.rank() as u64);
            if g.rank() == 0 {
                // Rank 0 is behind: it never joins rank 1's all-reduce, but lives on.
                std::thread::sleep(Duration::from_secs(9));
                return None;
            }
            let mut t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
            let err = g.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
            Some(err)
        });
        let err = out[1].as_ref().expect("rank 1 reports");
        let msg = err.to_string();
        assert!(
            msg.contains(
                "lost rank 0 (alive but not taking part: rank 0 at step 7; this rank is at step 8)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn joining_without_the_others_times_out_naming_the_store() {
        let port = free_port();
        let err = Group::join(&options(0, 2, port, Duration::from_secs(1)))
            .err()
            .expect("no second rank");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "rank 0 of 2 could not join the group at 127.0.0.1:{port} within 1 s"
            )),
            "{msg}"
        );
    }
}
