//! Validation at an epoch's end: the reconstruction loss of a pre-training model, or
//! [`crate::eval::evaluate`] of a classifier (its last run keeps the predictions for the
//! run's report) and of the weights' moving average when the run keeps one, as `val`
//! lines in `metrics.jsonl` and one line on stderr.
//!
//! Owns when a validation runs (`--eval-every`, and after the last epoch) and what it
//! records. Samples that cannot be read go to `errors.jsonl` (with `--strict`, the
//! first is an error). It never changes the model.

use std::sync::Arc;

use pmv_core::report::{Reporter, Unit};
use pmv_term::output::errln;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::Trainer;
use super::records::{EmaScores, Record};
use super::step::draw_mask;
use crate::data::loader::{Loader, LoaderSpec, Normalizer, SampleError};
use crate::dist::Dist;
use crate::error::TrainError;
use crate::eval;
use crate::models::mae::VideoMaePretrain;

/// The mean reconstruction loss of a pre-training model over `spec` (no gradients),
/// with masks keyed by each batch's position, so every validation sees the same ones.
/// With several ranks each takes its share of the batches and the sums are added up.
fn validate_reconstruction(
    mae: &VideoMaePretrain,
    spec: Arc<LoaderSpec>,
    device: Device,
    seed: u64,
    reporter: &dyn Reporter,
    label: &str,
    dist: &Dist,
) -> Result<(f64, u64, Vec<SampleError>), TrainError> {
    let norm = Normalizer::new(device);
    let loader = Loader::start(Arc::clone(&spec), 0, 0);
    reporter.begin(label, Some(loader.batches() as u64), Unit::Items);
    let mut sum = Tensor::zeros([], (Kind::Double, device));
    let mut samples = 0u64;
    let mut errors = vec![];
    let result = tch::no_grad(|| -> Result<(), TrainError> {
        for batch in loader {
            let b = batch?;
            errors.extend(b.errors.iter().cloned());
            reporter.advance(1);
            if b.is_empty() {
                continue;
            }
            let x = b.input(device, &norm);
            // The batch's index in the split, whichever rank reads it.
            let i = b.positions.first().copied().unwrap_or_default() / spec.batch.max(1) as u64;
            // Validation masks live in their own corner of the mask stream.
            let mask = draw_mask(mae, &x, seed ^ 0x7661_6c69_6461_7465, i, 0, device);
            let loss = mae.loss(&x, &mask, None);
            let _ = sum.g_add_(&(loss.to_kind(Kind::Double) * b.len() as f64));
            samples += b.len() as u64;
        }
        Ok(())
    });
    reporter.end();
    result?;
    let mut sum = sum.double_value(&[]);
    if dist.is_group() {
        let mut both = Tensor::from_slice(&[sum, samples as f64]);
        dist.sum(&mut both)?;
        sum = both.double_value(&[0]);
        samples = both.double_value(&[1]) as u64;
        errors = dist.gather_json(errors, "sample errors")?;
    }
    let loss = if samples > 0 {
        sum / samples as f64
    } else {
        f64::NAN
    };
    Ok((loss, samples, errors))
}

impl Trainer<'_> {
    /// Validates the epoch that just ended when `--eval-every` (or the last epoch) asks
    /// for it; else only says the epoch's train loss.
    pub(super) fn validate_epoch(&mut self) -> Result<(), TrainError> {
        let epoch = self.pos.epoch;
        let epochs = self.setup.hyper.epochs;
        let last_epoch = epoch + 1 == epochs;
        let validate_now =
            (epoch + 1).is_multiple_of(self.args.run.eval_every.max(1)) || last_epoch;
        let vspec = self.feed.val.clone();
        if let (Some(vspec), true) = (&vspec, validate_now) {
            if self.built.net.mae().is_some() {
                return self.validate_reconstruction_epoch(Arc::clone(vspec));
            }
            return self.validate_classifier_epoch(Arc::clone(vspec), last_epoch);
        }
        if !self.quiet {
            errln!(
                "epoch {}/{}: train loss {:.4}",
                epoch + 1,
                epochs,
                self.last_loss
            );
        }
        Ok(())
    }

    /// Pre-training: the reconstruction loss on the validation split.
    fn validate_reconstruction_epoch(&mut self, vspec: Arc<LoaderSpec>) -> Result<(), TrainError> {
        let (step, epoch) = (self.pos.step, self.pos.epoch);
        let Some(mae) = self.built.net.mae() else {
            return Ok(());
        };
        let (loss, samples, errs) = validate_reconstruction(
            mae,
            vspec,
            self.built.device,
            self.args.run.seed,
            self.reporter,
            &format!("validate epoch {}", epoch + 1),
            &self.dist,
        )?;
        for e in &errs {
            self.errors.push(&json!({"step": step, "epoch": epoch, "split": "val", "shard": e.shard, "key": e.key, "error": e.error}))?;
        }
        if self.args.run.strict
            && let Some(e) = errs.first()
        {
            return Err(TrainError::BadSample(e.to_string()));
        }
        self.metrics.push(&Record::ValReconstruction {
            step,
            epoch,
            loss,
            samples,
        })?;
        if !self.quiet {
            errln!(
                "epoch {}/{}: train loss {:.4}, val reconstruction loss {loss:.4}",
                epoch + 1,
                self.setup.hyper.epochs,
                self.last_loss
            );
        }
        self.last_val_loss = Some(loss);
        Ok(())
    }

    /// A classifier: top-1, top-5, loss and per-class accuracy on the validation split.
    fn validate_classifier_epoch(
        &mut self,
        vspec: Arc<LoaderSpec>,
        last_epoch: bool,
    ) -> Result<(), TrainError> {
        let (step, epoch) = (self.pos.step, self.pos.epoch);
        // The last validation keeps its predictions for the run's report.
        let r = eval::evaluate(
            &self.built.net,
            Arc::clone(&vspec),
            self.built.device,
            &self.setup.classes,
            last_epoch,
            self.reporter,
            &format!("validate epoch {}", epoch + 1),
            &self.dist,
        )?;
        for e in &r.errors {
            self.errors.push(&json!({"step": step, "epoch": epoch, "split": "val", "shard": e.shard, "key": e.key, "error": e.error}))?;
        }
        if self.args.run.strict
            && let Some(e) = r.errors.first()
        {
            return Err(TrainError::BadSample(e.to_string()));
        }
        // The moving average sees the same views; its unreadable samples are the
        // model's, listed once.
        let ema = match &self.built.ema {
            Some(ema) => Some(eval::evaluate(
                &ema.net,
                Arc::clone(&vspec),
                self.built.device,
                &self.setup.classes,
                false,
                self.reporter,
                &format!("validate epoch {} (moving average)", epoch + 1),
                &self.dist,
            )?),
            None => None,
        };
        let ema_scores = ema.as_ref().map(|e| EmaScores {
            loss: e.summary.loss,
            top1: e.summary.top1,
            top5: e.summary.top5,
            mean_class_accuracy: e.summary.mean_class_accuracy,
            map: e.summary.map,
        });
        let s = &r.summary;
        self.metrics.push(&Record::Val {
            step,
            epoch,
            loss: s.loss,
            top1: s.top1,
            top5: s.top5,
            mean_class_accuracy: s.mean_class_accuracy,
            map: s.map,
            samples: s.samples,
            ema: ema_scores.clone(),
        })?;
        if !self.quiet {
            errln!(
                "epoch {}/{}: train loss {:.4}, val loss {:.4}, val top-1 {:.1}%, top-5 {:.1}%",
                epoch + 1,
                self.setup.hyper.epochs,
                self.last_loss,
                s.loss,
                100.0 * s.top1,
                100.0 * s.top5
            );
            if let Some(e) = &ema_scores {
                errln!(
                    "epoch {}/{}: moving average: val loss {:.4}, val top-1 {:.1}%, top-5 {:.1}%",
                    epoch + 1,
                    self.setup.hyper.epochs,
                    e.loss,
                    100.0 * e.top1,
                    100.0 * e.top5
                );
            }
        }
        self.last_val = Some(r);
        self.last_val_ema = ema;
        Ok(())
    }
}
