//! Checkpoints during training: every `--save-every` steps, at every epoch's end, and
//! when SIGINT or SIGTERM asks the run to stop (then the loop ends after the save).
//!
//! Owns the signal handlers and what a checkpoint holds (weights, optimiser moments,
//! the weights' moving average when the run keeps one, the state that resumes the
//! loop, the line files synced first). Writing the files
//! and keeping the newest `--keep` is [`crate::checkpoint`]'s.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::Tensor;

use super::Trainer;
use crate::checkpoint::{self, State};
use crate::error::TrainError;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    // A second signal ends the process the usual way.
    // SAFETY: signal() is async-signal-safe; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// SIGINT and SIGTERM ask the step loop to checkpoint and stop.
pub(super) fn install_stop_handlers() {
    // SAFETY: the handler only stores to an atomic and resets its own disposition.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether a signal asked the run to stop.
pub(super) fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

impl Trainer<'_> {
    /// Saves a checkpoint at `at` (step, epoch, batch in the epoch), after syncing the
    /// line files, and keeps its state as the run's.
    /// With several ranks, every rank calls it at the same step; rank 0 writes.
    pub(super) fn save(&mut self, at: (u64, u64, usize)) -> Result<(), TrainError> {
        self.sync_buffers()?;
        if !self.dist.is_main() {
            return Ok(());
        }
        self.metrics.sync()?;
        self.errors.sync()?;
        let weights: Vec<(String, Tensor)> = self.built.vs.variables().into_iter().collect();
        let ema = self.built.ema.as_ref().map(|e| e.weights());
        let s = State {
            step: at.0,
            epoch: at.1,
            batch_in_epoch: at.2,
            bad_samples: self.pos.bad_samples,
            world: self.dist.world(),
            ..self.state.clone()
        };
        self.state = checkpoint::save(
            &self.setup.run_dir,
            &weights,
            &self.built.opt.state(),
            ema.as_deref(),
            s,
            &self.metadata,
            self.args.run.keep,
        )?;
        Ok(())
    }
}
