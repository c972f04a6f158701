//! The end of a run: the final model (`model.safetensors`, `model.json`, the
//! `transformers` config of a ViT, `model-ema.safetensors` with `--model-ema`), the finished `state.json`, the curves, the last
//! validation as an evaluation report, `summary.json`, and the run's row in the
//! catalog when it trained on a catalog's shards.
//!
//! Owns those outputs and the summary a command prints. An interrupted run writes no
//! model and ends in [`TrainError::Interrupted`] after its summary. It never trains.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;
use tch::{Tensor, nn};

use super::Trainer;
use super::records::{draw_curves, read_records};
use crate::checkpoint::{self, RunDir};
use crate::data::Source;
use crate::device::device_name;
use crate::error::TrainError;
use crate::eval;
use crate::run::RunConfig;

/// What the end of a run wrote.
struct Outputs {
    files: Vec<PathBuf>,
    plots: Vec<PathBuf>,
    val_report: Option<eval::Written>,
    checkpoints: Vec<PathBuf>,
}

impl Trainer<'_> {
    /// Writes the final outputs and the summary; returns the summary and the number of
    /// samples left out (an interrupted run: [`TrainError::Interrupted`]).
    pub(super) fn finish(
        mut self,
        train_secs: f64,
    ) -> Result<(serde_json::Value, u64), TrainError> {
        if !self.dist.is_main() {
            // Rank 0 writes the outputs and speaks for the group.
            if self.interrupted {
                return Err(TrainError::Interrupted {
                    step: self.pos.step,
                    run_dir: self.setup.run_dir.path().to_owned(),
                });
            }
            return Ok((json!({"rank": self.dist.rank()}), 0));
        }
        let outputs = self.write_outputs()?;
        let mut summary = self.summary(&outputs, train_secs);
        let run_dir = &self.setup.run_dir;
        checkpoint::write_json(&run_dir.file("summary.json"), &summary)?;
        // A run on a catalog's shards is recorded there, as every pmv-data run is.
        let command = if self.args.pretrain.is_some() {
            "pretrain"
        } else {
            "train"
        };
        let bad_samples = self.pos.bad_samples;
        let recorded = match &self.setup.plan.source {
            Source::Catalog { root, .. } => {
                record_in_catalog(root, command, &summary, self.interrupted, bad_samples)
            }
            _ => None,
        };
        if let Some(o) = summary.as_object_mut() {
            o.insert("command".into(), command.into());
            o.insert("run_id".into(), json!(recorded.as_ref().map(|r| &r.0)));
            o.insert("report".into(), json!(recorded.as_ref().map(|r| &r.1)));
        }
        if self.interrupted {
            return Err(TrainError::Interrupted {
                step: self.pos.step,
                run_dir: run_dir.path().to_owned(),
            });
        }
        Ok((summary, bad_samples))
    }

    /// The curves, and unless interrupted the model, the finished state and the last
    /// validation as an evaluation report.
    fn write_outputs(&mut self) -> Result<Outputs, TrainError> {
        let interrupted = self.interrupted;
        let run_dir = &self.setup.run_dir;
        // Final outputs.
        let mut files: Vec<PathBuf> = vec![];
        let plots = draw_curves(
            run_dir.path(),
            &read_records(&run_dir.file("metrics.jsonl")),
        )?;
        if !interrupted {
            files = write_model(run_dir, &self.built.vs, &self.setup.cfg, &self.metadata)?;
            if let Some(ema) = &self.built.ema {
                // Beside the model, with the same names: it loads wherever the model does.
                let f = run_dir.file("model-ema.safetensors");
                checkpoint::write_safetensors(&f, &ema.weights(), &self.metadata)?;
                files.push(f);
            }
            let state = &mut self.state;
            state.finished = true;
            state.step = self.pos.step;
            state.epoch = self.pos.epoch;
            state.batch_in_epoch = 0;
            state.bad_samples = self.pos.bad_samples;
            checkpoint::write_json(&run_dir.file("state.json"), state)?;
        }
        // The last validation as an evaluation report (1 view per video: the middle clip,
        // centre crop); `eval` gives every view.
        let mut val_report: Option<eval::Written> = None;
        if let (false, Some(r), Some(v)) = (interrupted, &self.last_val, &self.setup.val_split) {
            let dir = run_dir.file(&format!("eval-{}-1x1", v.split));
            val_report = Some(eval::write_reports(
                &dir,
                &self.setup.cfg,
                r,
                &self.setup.val_shard_problems,
                json!({
                    "run_dir": run_dir.path(),
                    "split": v.split,
                    "views": { "clips": 1, "crops": 1 },
                    "weights": run_dir.file("model.safetensors"),
                    "device": device_name(self.built.device),
                    "precision": self.built.precision,
                    "shards": v.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
                }),
            )?);
        }
        let checkpoints: Vec<PathBuf> = fs_err::read_dir(run_dir.checkpoints())
            .map(|rd| {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().ends_with(".safetensors"))
                    })
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        Ok(Outputs {
            files,
            plots,
            val_report,
            checkpoints,
        })
    }

    /// The summary `summary.json` holds and the command prints.
    fn summary(&self, o: &Outputs, train_secs: f64) -> serde_json::Value {
        let run_dir = &self.setup.run_dir;
        let val_report = &o.val_report;
        // The figures of a validation, for the model and for its average alike.
        let scores = |r: &eval::EvalResult| {
            json!({
                "top1": r.summary.top1,
                "top5": r.summary.top5,
                "loss": r.summary.loss,
                "mean_class_accuracy": r.summary.mean_class_accuracy,
                "map": r.summary.map,
                "samples": r.summary.samples,
            })
        };
        let val = self.last_val.as_ref().map(scores);
        let val_ema = self.last_val_ema.as_ref().map(scores);
        json!({
            "run_dir": run_dir.path(),
            "status": if self.interrupted { "interrupted" } else { "ok" },
            "model": self.setup.model_spec.name(),
            "data": self.setup.plan.name,
            "classes": self.setup.classes.len(),
            "parameters": self.built.params,
            "steps": self.pos.step,
            "epochs": self.pos.epoch,
            "resumed_from_step": self.pos.resumed_from,
            "final_loss": self.last_loss,
            "train_top1": self.last_train_acc,
            "val": val,
            "val_ema": val_ema,
            "val_loss": val.as_ref().map(|v| v["loss"].clone()).or(self.last_val_loss.map(|l| json!(l))),
            "top1": val.as_ref().map(|v| v["top1"].clone()),
            "top5": val.as_ref().map(|v| v["top5"].clone()),
            "eval_json": val_report.as_ref().map(|w| &w.eval_json),
            "bad_samples": self.pos.bad_samples,
            "device": device_name(self.built.device),
            "distributed": self.dist.describe(),
            "precision": self.built.precision,
            // Every rank reads as many clips as rank 0.
            "clips_per_s": (self.clips_done * self.dist.world() as u64) as f64 / train_secs.max(1e-9),
            "duration_s": self.started.elapsed().as_secs_f64(),
            "init": self.built.init_report,
            "files": {
                "run_json": run_dir.file("run.json"),
                "state_json": run_dir.file("state.json"),
                "metrics": run_dir.file("metrics.jsonl"),
                "errors": run_dir.file("errors.jsonl"),
                "model": o.files,
                "checkpoints": o.checkpoints,
                "plots": o.plots,
                "eval_json": val_report.as_ref().map(|w| &w.eval_json),
                "predictions_csv": val_report.as_ref().map(|w| &w.predictions_csv),
                "probabilities_npy": val_report.as_ref().map(|w| &w.probabilities_npy),
                "eval_plots": val_report.as_ref().map(|w| &w.plots),
            },
        })
    }
}

/// Writes the final model: `model.safetensors`, `model.json` and, for ViTs, the
/// `transformers` `config.json` and `preprocessor_config.json`. Returns their paths.
fn write_model(
    run: &RunDir,
    vs: &nn::VarStore,
    cfg: &RunConfig,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<PathBuf>, TrainError> {
    let weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let model_file = run.file("model.safetensors");
    checkpoint::write_safetensors(&model_file, &weights, metadata)?;
    let model_json = run.file("model.json");
    checkpoint::write_json(
        &model_json,
        &json!({
            "model": cfg.model,
            "classes": cfg.classes,
            "multi_label": cfg.multi_label,
            "input": { "frames": cfg.input[0], "height": cfg.input[1], "width": cfg.input[2] },
            "normalisation": { "mean": crate::models::MEAN, "std": crate::models::STD },
        }),
    )?;
    let mut files = vec![model_file, model_json];
    let tokenizer = crate::run::tokenizer_file(run);
    if tokenizer.is_file() {
        files.push(tokenizer);
    }
    for (name, content) in crate::run::hf_files(cfg) {
        let path = run.file(name);
        checkpoint::write_json(&path, &content)?;
        files.push(path);
    }
    Ok(files)
}

/// Adds a finished row to the catalog's `runs` table and `runs/<id>.json` (shaped as
/// every command's run report); returns the run id and the report's path. A failure
/// here is logged, never fatal (the run directory holds everything).
fn record_in_catalog(
    root: &Path,
    command: &str,
    summary: &serde_json::Value,
    interrupted: bool,
    bad: u64,
) -> Option<(String, PathBuf)> {
    use pmv_catalog::{Catalog, RunStatus};
    let id = pmv_core::report::new_run_id(command);
    let status = if interrupted {
        RunStatus::Interrupted
    } else if bad > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = Catalog::open(&root.join("catalog.sqlite")).and_then(|c| {
        c.start_run(&id, command, &json!(argv))?;
        c.finish_run(&id, status, summary)
    });
    if let Err(e) = result {
        tracing::warn!("could not record the run in the catalog: {e}");
        return None;
    }
    let root = pmv_core::root::DataRoot::new(root);
    let document = json!({
        "run_id": id,
        "command": command,
        "pmv_data": pmv_core::VERSION,
        "args": argv,
        "result": summary,
    });
    match pmv_core::report::write_run_report(&root, &id, &document) {
        Ok(path) => Some((id, path)),
        Err(e) => {
            tracing::warn!("could not write the run report: {e}");
            None
        }
    }
}
