//! The step loop: epochs of optimiser steps, each the sum of `--accum` micro-batches,
//! with a metrics line every `--log-every` steps, a checkpoint every `--save-every`,
//! and validation and a checkpoint at every epoch's end.
//!
//! Owns the order of those events and the device-side sums between metrics lines (the
//! one wait for the device is reading them). It never decides a loss (`step` does) and
//! never writes a checkpoint itself (`checkpointing` does).

use std::sync::Arc;
use std::time::Instant;

use pmv_core::report::Unit;
use serde_json::json;
use tch::{Kind, Tensor};

use super::Trainer;
use super::records::{Record, draw_curves, read_records};
use super::step::{MicroInput, micro_step};
use crate::data::loader::Loader;
use crate::error::TrainError;

/// Device-side sums since the last metrics line.
struct Window {
    loss_sum: Tensor,
    correct: Tensor,
    micro: u64,
    counted: u64,
    clips: u64,
    /// Samples left out since the last line (with several ranks, this rank's, whose
    /// `errors.jsonl` lines wait in `error_lines` for rank 0 to write them).
    bad: u64,
    error_lines: Vec<serde_json::Value>,
    steps: u64,
    start: Instant,
}

impl Window {
    fn new(device: tch::Device) -> Window {
        Window {
            loss_sum: Tensor::zeros([], (Kind::Float, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            micro: 0,
            counted: 0,
            clips: 0,
            bad: 0,
            error_lines: vec![],
            steps: 0,
            start: Instant::now(),
        }
    }
}

impl Trainer<'_> {
    /// Runs the epochs left. A signal stops the loop after a checkpoint
    /// (`self.interrupted`).
    pub(super) fn run_epochs(&mut self) -> Result<(), TrainError> {
        while self.pos.epoch < self.setup.hyper.epochs {
            if self.epoch()? {
                self.interrupted = true;
                break;
            }
            self.end_epoch()?;
            if self.dist.any(super::checkpointing::stop_requested())? {
                self.interrupted = true;
                break;
            }
        }
        Ok(())
    }

    /// The steps of the current epoch, from where the run stands in it. Returns whether
    /// a signal stopped it (after a checkpoint).
    fn epoch(&mut self) -> Result<bool, TrainError> {
        let hp = &self.setup.hyper;
        let accum = hp.accum;
        let steps_per_epoch = self.feed.steps_per_epoch;
        let mut loader = Loader::start(
            Arc::clone(&self.feed.train),
            self.pos.epoch,
            self.pos.batch_in_epoch,
        );
        self.reporter.begin(
            &format!("epoch {}/{}", self.pos.epoch + 1, hp.epochs),
            Some(steps_per_epoch),
            Unit::Items,
        );
        self.reporter
            .advance((self.pos.batch_in_epoch / accum) as u64);
        let mut window = Window::new(self.built.device);
        while ((self.pos.batch_in_epoch / accum) as u64) < steps_per_epoch {
            let lr = self.feed.schedule.at(self.pos.step);
            self.accumulate(&mut loader, &mut window)?;
            let opt = &mut self.built.opt;
            opt.bind_grads();
            // One all-reduce a step: the mean of every rank's gradients.
            self.dist.average(opt.grads_mut())?;
            if let Some(c) = self.setup.hyper.clip_grad {
                let _ = opt.clip(c);
            }
            opt.update(lr);
            opt.zero_grad();
            if let Some(ema) = &self.built.ema {
                ema.update();
            }
            self.pos.step += 1;
            self.pos.batch_in_epoch += accum;
            self.dist.set_progress(self.pos.step);
            window.steps += 1;
            self.reporter.advance(1);

            let step = self.pos.step;
            let epoch_done = (self.pos.batch_in_epoch / accum) as u64 >= steps_per_epoch;
            let log_now = step.is_multiple_of(self.args.run.log_every.max(1)) || epoch_done;
            if log_now {
                self.log_window(&mut window, lr)?;
            }
            let save_every = self.args.run.save_every;
            if save_every > 0 && step.is_multiple_of(save_every) && !epoch_done {
                self.save((step, self.pos.epoch, self.pos.batch_in_epoch))?;
            }
            // Ranks stop together: a signal is heard at a metrics line (with one rank, at
            // any step), so every rank saves at the same step.
            let stop = if self.dist.is_group() {
                log_now && self.dist.any(super::checkpointing::stop_requested())?
            } else {
                super::checkpointing::stop_requested()
            };
            if stop {
                self.save((step, self.pos.epoch, self.pos.batch_in_epoch))?;
                self.reporter.end();
                return Ok(true);
            }
        }
        self.reporter.end();
        drop(loader);
        Ok(false)
    }

    /// The `--accum` micro-batches of one optimiser step: forward, loss and backward of
    /// each (gradients add up), with the samples that could not be read logged and
    /// counted (with `--strict`, the first is an error).
    fn accumulate(&mut self, loader: &mut Loader, w: &mut Window) -> Result<(), TrainError> {
        let accum = self.setup.hyper.accum;
        let step = self.pos.step;
        let epoch = self.pos.epoch;
        for k in 0..accum {
            let b = loader
                .next()
                .ok_or_else(|| TrainError::Invalid("the loader ended early".into()))??;
            if !b.errors.is_empty() {
                for e in &b.errors {
                    tracing::error!("{e}");
                    let line = json!({"step": step, "epoch": epoch, "shard": e.shard, "key": e.key, "error": e.error});
                    if self.dist.is_group() {
                        w.error_lines.push(line);
                    } else {
                        self.errors.push(&line)?;
                    }
                }
                if self.dist.is_group() {
                    w.bad += b.errors.len() as u64;
                } else {
                    self.pos.bad_samples += b.errors.len() as u64;
                }
                if self.args.run.strict {
                    return Err(TrainError::BadSample(b.errors[0].to_string()));
                }
            }
            if b.is_empty() {
                continue;
            }
            let micro_index = step * accum as u64 + k as u64;
            // Clips through the model: samples × their training views.
            let n = b.rows() as u64;
            let m = micro_step(&MicroInput {
                net: &self.built.net,
                batch: &b,
                hyper: &self.setup.hyper,
                seed: self.args.run.seed,
                micro_index,
                rank: self.dist.rank() as u64,
                device: self.built.device,
                norm: &self.norm,
                classes: self.setup.classes.len(),
                multi_label: self.setup.multi_label,
            });
            (&m.loss / accum as f64).backward();
            let _ = w.loss_sum.g_add_(&m.loss.detach());
            w.micro += 1;
            if let Some(hits) = &m.hits {
                let _ = w.correct.g_add_(hits);
                w.counted += n;
            }
            w.clips += n;
            self.clips_done += n;
        }
        Ok(())
    }

    /// A `train` metrics line from the sums since the last one (the one wait for the
    /// device), then a fresh window. A loss that is not finite ends the run.
    fn log_window(&mut self, w: &mut Window, lr: f64) -> Result<(), TrainError> {
        let step = self.pos.step;
        let steps_per_epoch = self.feed.steps_per_epoch;
        let accum = self.setup.hyper.accum;
        // The one wait for the device: read the sums (every rank's, with several).
        let (loss_sum, correct) = if self.dist.is_group() {
            self.gather_window(w)?
        } else {
            (w.loss_sum.double_value(&[]), w.correct.int64_value(&[]))
        };
        let loss = if w.micro > 0 {
            loss_sum / w.micro as f64
        } else {
            f64::NAN
        };
        if w.micro > 0 && !loss.is_finite() {
            return Err(TrainError::Diverged { step, loss });
        }
        let acc = (w.counted > 0).then(|| correct as f64 / w.counted as f64);
        let secs = w.start.elapsed().as_secs_f64().max(1e-9);
        let comm = self.dist.take_comm_secs();
        let allreduce_s = (self.dist.is_group() && w.steps > 0).then(|| comm / w.steps as f64);
        self.metrics.push(&Record::Train {
            step,
            epoch: self.pos.epoch as f64
                + (self.pos.batch_in_epoch / accum) as f64 / steps_per_epoch as f64,
            loss,
            accuracy: acc,
            lr,
            clips_per_s: w.clips as f64 / secs,
            elapsed_s: self.started.elapsed().as_secs_f64(),
            allreduce_s,
        })?;
        tracing::info!(
            "step {step}/{}: loss {loss:.4}, lr {lr:.3e}, {:.1} clips/s",
            self.feed.total_steps,
            w.clips as f64 / secs
        );
        self.last_loss = loss;
        self.last_train_acc = acc.or(self.last_train_acc);
        let _ = w.loss_sum.zero_();
        let _ = w.correct.zero_();
        w.micro = 0;
        w.counted = 0;
        w.clips = 0;
        w.steps = 0;
        w.start = Instant::now();
        Ok(())
    }

    /// Every rank's sums since the last line, added up (one all-reduce of six numbers),
    /// and every rank's unreadable samples written to `errors.jsonl` by rank 0. Leaves
    /// the group's counts in `w`; returns the loss sum and the hits.
    fn gather_window(&mut self, w: &mut Window) -> Result<(f64, i64), TrainError> {
        let device = w.loss_sum.device();
        let counts = Tensor::from_slice(&[
            w.micro as f64,
            w.counted as f64,
            w.clips as f64,
            w.bad as f64,
        ])
        .to_device(device);
        let mut all = Tensor::cat(
            &[
                w.loss_sum.to_kind(Kind::Double).view([1]),
                w.correct.to_kind(Kind::Double).view([1]),
                counts,
            ],
            0,
        );
        self.dist.sum(&mut all)?;
        let v: Vec<f64> = Vec::try_from(all.to_device(tch::Device::Cpu))
            .map_err(|e| TrainError::Dist(format!("reading the ranks' sums: {e}")))?;
        w.micro = v[2] as u64;
        w.counted = v[3] as u64;
        w.clips = v[4] as u64;
        self.pos.bad_samples += v[5] as u64;
        w.bad = 0;
        if v[5] > 0.0 {
            let mine = std::mem::take(&mut w.error_lines);
            for l in &self.dist.gather_json(mine, "errors.jsonl lines")? {
                self.errors.push(l)?;
            }
        }
        Ok((v[0], v[1] as i64))
    }

    /// End of the epoch: validate, then checkpoint at the start of the next, and redraw
    /// the curves.
    fn end_epoch(&mut self) -> Result<(), TrainError> {
        self.sync_buffers()?;
        self.validate_epoch()?;
        self.pos.epoch += 1;
        self.pos.batch_in_epoch = 0;
        self.save((self.pos.step, self.pos.epoch, 0))?;
        if self.dist.is_main() {
            let run_dir = &self.setup.run_dir;
            let _ = draw_curves(
                run_dir.path(),
                &read_records(&run_dir.file("metrics.jsonl")),
            )
            .map_err(|e| tracing::warn!("{e}"));
        }
        Ok(())
    }

    /// With several ranks: every rank's running statistics (batch norm's means and
    /// variances, which each rank updates from its own batches) become their mean, so
    /// validation and checkpoints see one model.
    pub(super) fn sync_buffers(&mut self) -> Result<(), TrainError> {
        if !self.dist.is_group() {
            return Ok(());
        }
        let world = self.dist.world() as f64;
        tch::no_grad(|| -> Result<(), TrainError> {
            for (_, mut t) in super::setup::buffers(&self.built.vs) {
                if !t.is_floating_point() {
                    continue;
                }
                self.dist.sum(&mut t)?;
                let _ = t.g_div_scalar_(world);
            }
            Ok(())
        })
    }
}
