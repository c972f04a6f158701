//! Data-parallel training across processes: which rank this process is, its device, and
//! the few collectives training and evaluation need, on PyTorch's own engine
//! ([`pmv_c10d`]: Gloo on the CPU, NCCL on CUDA).
//!
//! Owns the decision to join a group (a launcher's environment: torchrun, Slurm's srun,
//! or `--nproc`'s ranks), each rank's device (`cuda:LOCAL_RANK`), the backend, and the
//! time spent in gradient averaging. A single process is a group of one: every
//! collective is then a no-op, so the training code reads the same either way. It never
//! decides what a rank reads or writes (the loader's `Share` and rank 0's checks do).

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmv_c10d::launch::{Launch, Launcher};
use pmv_c10d::{Backend, Group, JoinOptions, ReduceOp};
use tch::{Device, Tensor};

use crate::cli::{DeviceChoice, DistArgs};
use crate::data::loader::Share;
use crate::device::{DeviceError, resolve_device};
use crate::error::TrainError;

/// Whether this process speaks for its group (prints the command's result): a single
/// process, or rank 0 of a launcher's ranks.
pub fn speaks() -> bool {
    Launch::from_env().map_or(true, |l| l.is_none_or(|l| l.rank == 0))
}

/// This process's place among the ranks.
pub struct Dist {
    group: Option<Arc<Group>>,
    rank: usize,
    world: usize,
    launcher: Option<Launcher>,
    /// Seconds spent averaging gradients since the last [`Dist::take_comm_secs`].
    comm: Cell<f64>,
}

impl Drop for Dist {
    fn drop(&mut self) {
        crate::models::synchronise_batch_norm(None);
    }
}

impl Dist {
    /// One process, no group.
    pub fn single() -> Dist {
        Dist {
            group: None,
            rank: 0,
            world: 1,
            launcher: None,
            comm: Cell::new(0.0),
        }
    }

    /// Joins the group a launcher started this process in (a single process when none
    /// did), on this rank's device: with CUDA, `cuda:LOCAL_RANK` (ranks share devices
    /// when there are more ranks on the machine than devices). NCCL moves CUDA tensors
    /// when each rank has a device of its own and this build has NCCL; Gloo does
    /// everything else.
    /// (`--nproc` under another launcher is the binary's to refuse, before this.)
    pub fn join(args: &DistArgs, choice: DeviceChoice) -> Result<(Dist, Device), TrainError> {
        let launch = Launch::from_env().map_err(|e| TrainError::Usage(e.to_string()))?;
        let device = resolve_device(choice)?;
        let Some(launch) = launch else {
            return Ok((Dist::single(), device));
        };
        let (device, backend) = match device {
            Device::Cuda(_) => {
                let count = tch::Cuda::device_count().max(1) as usize;
                let local_world = launch.local_world.unwrap_or(launch.world);
                let index = launch.local_rank % count;
                let own = local_world <= count;
                let backend = if own && pmv_c10d::has_nccl() {
                    Backend::Nccl
                } else {
                    if !own {
                        tracing::warn!(
                            "{local_world} ranks share {count} CUDA device(s): gradients go through Gloo, not NCCL"
                        );
                    } else {
                        tracing::warn!("this build has no NCCL: gradients go through Gloo");
                    }
                    Backend::Gloo
                };
                if index as i64 >= tch::Cuda::device_count() {
                    return Err(DeviceError::NoSuchCuda {
                        asked: index,
                        found: tch::Cuda::device_count(),
                    }
                    .into());
                }
                (Device::Cuda(index), backend)
            }
            _ => (Device::Cpu, Backend::Gloo),
        };
        let group = pmv_c10d::Group::join(&JoinOptions {
            rank: launch.rank,
            world: launch.world,
            master_addr: launch.master_addr.clone(),
            master_port: launch.master_port,
            agent_store: launch.agent_store,
            backend,
            device_index: match device {
                Device::Cuda(i) => i,
                _ => 0,
            },
            timeout: Duration::from_secs(args.dist_timeout),
        })
        .map_err(|e| {
            let hint = match launch.launcher {
                // An sbatch or salloc shell has SLURM_PROCID and SLURM_NTASKS too.
                Launcher::Slurm => {
                    " (Slurm: start one task per rank with srun; a batch script's own shell is not a rank)"
                }
                Launcher::Torchrun => "",
            };
            TrainError::Dist(format!("{e}{hint}"))
        })?;
        Ok((
            Dist {
                group: Some(Arc::new(group)),
                rank: launch.rank,
                world: launch.world,
                launcher: Some(launch.launcher),
                comm: Cell::new(0.0),
            },
            device,
        ))
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Rank 0: the one that writes checkpoints, metrics and reports, and speaks.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// More than one rank.
    pub fn is_group(&self) -> bool {
        self.world > 1
    }

    /// This rank's part of each epoch.
    pub fn share(&self) -> Share {
        Share {
            rank: self.rank,
            world: self.world,
        }
    }

    /// The backend's name ("gloo", "nccl"), or "none" for a single process.
    pub fn backend_name(&self) -> &'static str {
        self.group.as_ref().map_or("none", |g| g.backend().name())
    }

    /// Goes on only if every rank succeeded at `stage`: a rank that failed returns
    /// `Ok` (its own error follows); the others stop, naming it.
    pub fn agree(&self, ok: bool, stage: &str) -> Result<(), TrainError> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let flags = g
            .all_gather_rows(&Tensor::from_slice(&[i64::from(ok)]))
            .map_err(Self::err)?;
        let flags: Vec<i64> = Self::values(&flags)?;
        let failed: Vec<String> = flags
            .iter()
            .enumerate()
            .filter(|(_, f)| **f == 0)
            .map(|(r, _)| r.to_string())
            .collect();
        if !ok || failed.is_empty() {
            return Ok(());
        }
        Err(TrainError::Dist(format!(
            "rank {}: rank {} stopped while {stage} (its own message says why)",
            self.rank,
            failed.join(", ")
        )))
    }

    /// The group's backend and launcher, for the run's records.
    pub fn describe(&self) -> Option<serde_json::Value> {
        let g = self.group.as_ref()?;
        Some(serde_json::json!({
            "world_size": self.world,
            "backend": g.backend().name(),
            "launcher": match self.launcher {
                // `--nproc` starts its ranks as torchrun does, and says so.
                Some(Launcher::Torchrun)
                    if std::env::var_os("PMV_DATA_LAUNCHER").is_some_and(|v| v == "nproc") =>
                {
                    "nproc"
                }
                Some(Launcher::Torchrun) => "torchrun",
                Some(Launcher::Slurm) => "slurm",
                None => "none",
            },
        }))
    }

    fn err(e: pmv_c10d::DistError) -> TrainError {
        TrainError::Dist(e.to_string())
    }

    /// A gathered tensor's values.
    fn values<T>(t: &Tensor) -> Result<Vec<T>, TrainError>
    where
        Vec<T>: TryFrom<Tensor, Error = tch::TchError>,
    {
        Vec::<T>::try_from(t.flatten(0, -1)).map_err(|e| TrainError::Dist(e.to_string()))
    }

    /// Averages `t` (the flat gradient buffer) across ranks, in place, and counts the
    /// time it took.
    pub fn average(&self, t: &mut Tensor) -> Result<(), TrainError> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let started = Instant::now();
        g.all_reduce(t, ReduceOp::Avg).map_err(Self::err)?;
        self.comm
            .set(self.comm.get() + started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Seconds spent averaging gradients since the last call.
    pub fn take_comm_secs(&self) -> f64 {
        self.comm.replace(0.0)
    }

    /// Sums `t` across ranks, in place.
    pub fn sum(&self, t: &mut Tensor) -> Result<(), TrainError> {
        match &self.group {
            Some(g) => g.all_reduce(t, ReduceOp::Sum).map_err(Self::err),
            None => Ok(()),
        }
    }

    /// Whether any rank says yes.
    pub fn any(&self, yes: bool) -> Result<bool, TrainError> {
        let Some(g) = &self.group else {
            return Ok(yes);
        };
        let mut t = Tensor::from_slice(&[i64::from(yes)]);
        g.all_reduce(&mut t, ReduceOp::Max).map_err(Self::err)?;
        Ok(t.int64_value(&[0]) > 0)
    }

    /// Copies rank 0's `t` into every rank's, in place.
    pub fn broadcast(&self, t: &mut Tensor) -> Result<(), TrainError> {
        match &self.group {
            Some(g) => g.broadcast(t, 0).map_err(Self::err),
            None => Ok(()),
        }
    }

    /// Every rank's rows of `t` (first dimensions may differ), in rank order.
    pub fn gather_rows(&self, t: &Tensor) -> Result<Tensor, TrainError> {
        match &self.group {
            Some(g) => g.all_gather_rows(t).map_err(Self::err),
            None => Ok(t.shallow_clone()),
        }
    }

    /// Every rank's bytes, in rank order.
    pub fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TrainError> {
        let Some(g) = &self.group else {
            return Ok(vec![bytes.to_vec()]);
        };
        g.all_gather_parts(&Tensor::from_slice(bytes))
            .map_err(Self::err)?
            .iter()
            .map(Self::values)
            .collect()
    }

    /// Every rank's `items`, in rank order (sent as JSON).
    pub fn gather_json<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        items: Vec<T>,
        what: &str,
    ) -> Result<Vec<T>, TrainError> {
        if !self.is_group() {
            return Ok(items);
        }
        let bytes = serde_json::to_vec(&items)
            .map_err(|e| TrainError::Dist(format!("gathering {what}: {e}")))?;
        let mut all = vec![];
        for part in self.gather_bytes(&bytes)? {
            let mut theirs: Vec<T> = serde_json::from_slice(&part)
                .map_err(|e| TrainError::Dist(format!("gathering {what}: {e}")))?;
            all.append(&mut theirs);
        }
        Ok(all)
    }

    /// Checks that every rank computes the same thing before the first collective on
    /// it (ranks that disagree on a buffer's size would make Gloo end the process):
    /// `what` names the values, `values` are this rank's.
    pub fn check_same(&self, what: &str, values: &[i64]) -> Result<(), TrainError> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let all = g
            .all_gather_rows(&Tensor::from_slice(values).view([1, -1]))
            .map_err(Self::err)?;
        let all: Vec<i64> = Self::values(&all)?;
        for (r, theirs) in all.chunks(values.len().max(1)).enumerate() {
            if theirs != values {
                return Err(TrainError::Dist(format!(
                    "rank {r} has {what} {theirs:?}, rank {} has {values:?}: every rank must run the same command on the same data",
                    self.rank
                )));
            }
        }
        Ok(())
    }

    /// Makes every training-mode batch norm of the models compute its statistics over
    /// every rank's batch (`--sync-bn`), until this value is dropped.
    pub fn synchronise_batch_norm(&self) {
        if let Some(g) = &self.group {
            crate::models::synchronise_batch_norm(Some(Arc::clone(g)));
        }
    }

    /// Tells the group what this rank has done (its optimiser step), for the message
    /// a peer writes when this rank stops taking part.
    pub fn set_progress(&self, step: u64) {
        if let Some(g) = &self.group {
            g.set_progress(step);
        }
    }
}
