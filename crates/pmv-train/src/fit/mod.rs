//! Training: from a dataset's shards (or a shard directory) to a run directory with
//! weights, checkpoints, metrics and plots.
//!
//! Owns the run's setup (data, classes, input size, model, recipe → `run.json`), the
//! step loop (loader batches → device → mixup/cutmix → forward → soft-target or BCE
//! loss → backward with gradient accumulation → clipping → AdamW at the scheduled lr),
//! periodic checkpoints and validation, `metrics.jsonl` (and its TensorBoard events) and
//! `errors.jsonl`, resume from
//! the last checkpoint, and a checkpoint on SIGINT/SIGTERM. On CUDA nothing in the step
//! loop waits for the device except the metrics line every `--log-every` steps.
//!
//! [`train`] runs the phases in order, each in its own file: `plan` resolves what the
//! command asks for, `setup` opens the run and builds the model and loaders, `epoch`
//! runs the steps (one micro-batch's loss is `step`; `ema` keeps the weights' moving
//! average), `validate` scores the validation split (and the average) at epoch ends, `checkpointing` saves and stops on a signal, and `finish`
//! writes the model, the reports and the summary. A `Trainer` carries what the phases
//! after the setup share. Validation of a classifier is [`crate::eval`]'s;
//! evaluation never calls back into training.

mod checkpointing;
mod ema;
mod epoch;
mod finish;
mod plan;
mod records;
mod setup;
mod step;
mod tensorboard;
mod validate;

use std::collections::BTreeMap;
use std::time::Instant;

use pmv_core::report::Reporter;
use serde_json::json;

use crate::checkpoint::{self, STATE_VERSION, State};
use crate::cli::TrainArgs;
use crate::data::loader::Normalizer;
use crate::dist::Dist;
use crate::error::TrainError;
use crate::eval;
pub use records::{EmaScores, Record, draw_curves, read_records};
use records::{Lines, Metrics};
use setup::{Built, Feed, Position, Setup};

/// `pmv-data-train train`: returns the summary and the number of samples left out.
pub fn train(
    args: &TrainArgs,
    reporter: &dyn Reporter,
    quiet: bool,
) -> Result<(serde_json::Value, u64), TrainError> {
    let started = Instant::now();
    let (dist, device) = Dist::join(&args.run.dist, args.run.runtime.device)?;
    // Ranks other than 0 train silently: rank 0 speaks and writes for the group.
    let quiet = quiet || !dist.is_main();
    let (setup, readers) = setup::prepare_ranks(args, &dist)?;
    let mut built = setup::build(args, &setup, quiet, device)?;
    setup::same_start(&dist, &mut built)?;
    let pos = setup::resume(&setup, &mut built, quiet, &dist)?;
    let feed = setup::feed(args, &setup, readers, built.device, dist.share())?;
    let pos = setup::rescale(&setup, &feed, pos, &dist, quiet)?;
    dist.check_same(
        "(parameters, steps per epoch, step, epoch, batch)",
        &[
            built.params,
            feed.steps_per_epoch as i64,
            pos.step as i64,
            pos.epoch as i64,
            pos.batch_in_epoch as i64,
        ],
    )?;
    if setup.hyper.sync_bn {
        dist.synchronise_batch_norm();
    }
    if !quiet {
        setup::announce(&setup, &built, &feed, &dist);
    }
    let mut trainer = Trainer::new(
        args, reporter, quiet, started, setup, built, feed, pos, dist,
    )?;
    let train_started = Instant::now();
    trainer.run_epochs()?;
    let train_secs = train_started.elapsed().as_secs_f64();
    trainer.finish(train_secs)
}

/// What the step loop, validation, checkpoints and the final outputs share: the setup,
/// the model, the loaders, the open line files, the checkpoint state and what the run
/// has measured so far.
struct Trainer<'a> {
    args: &'a TrainArgs,
    reporter: &'a dyn Reporter,
    quiet: bool,
    started: Instant,
    setup: Setup,
    built: Built,
    feed: Feed,
    norm: Normalizer,
    metrics: Metrics,
    errors: Lines,
    /// The state of the last checkpoint (or the one to write first).
    state: State,
    /// The safetensors metadata of every checkpoint and the final model.
    metadata: BTreeMap<String, String>,
    pos: Position,
    last_val: Option<eval::EvalResult>,
    /// The last validation of the weights' moving average.
    last_val_ema: Option<eval::EvalResult>,
    last_val_loss: Option<f64>,
    interrupted: bool,
    last_loss: f64,
    last_train_acc: Option<f64>,
    clips_done: u64,
    /// This process's place among the data-parallel ranks.
    dist: Dist,
}

impl<'a> Trainer<'a> {
    /// Installs the stop handlers, opens the line files (a fresh run's first lines are
    /// the shards that could not be opened), and writes the `transformers` config
    /// beside the checkpoints of a ViT run, so any of them can be an `--init`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        args: &'a TrainArgs,
        reporter: &'a dyn Reporter,
        quiet: bool,
        started: Instant,
        setup: Setup,
        built: Built,
        feed: Feed,
        mut pos: Position,
        dist: Dist,
    ) -> Result<Trainer<'a>, TrainError> {
        checkpointing::install_stop_handlers();
        let run_dir = &setup.run_dir;
        let main = dist.is_main();
        let metrics = if main {
            Metrics::open(run_dir.path(), !args.run.no_tensorboard)?
        } else {
            Metrics::none()
        };
        let mut errors = if main {
            Lines::open(run_dir.file("errors.jsonl"))?
        } else {
            Lines::none()
        };
        for p in &setup.shard_problems {
            if setup.state.is_none() {
                errors.push(
                    &json!({"step": pos.step, "shard": p.path, "samples": p.samples, "error": p.error}),
                )?;
            }
        }
        if setup.state.is_none() {
            pos.bad_samples += setup
                .shard_problems
                .iter()
                .map(|p| p.samples.unwrap_or(1) as u64)
                .sum::<u64>();
        }
        let state = setup.state.clone().unwrap_or(State {
            version: STATE_VERSION,
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            finished: false,
            weights: String::new(),
            optimizer: String::new(),
            seed: args.run.seed,
            rng: "counter-based: xoshiro256++ keyed by (seed, purpose, epoch or step, position)"
                .into(),
            classes: setup.classes.clone(),
            hyper: serde_json::to_value(&setup.hyper).unwrap_or_default(),
            bad_samples: 0,
            saved_at: 0,
            ema: None,
            world: dist.world(),
        });
        let model_spec = &setup.model_spec;
        let mut metadata: BTreeMap<String, String> = BTreeMap::new();
        metadata.insert("format".into(), "pt".into());
        metadata.insert("pmv_data_model".into(), model_spec.name().to_owned());
        let hf = if main {
            crate::run::hf_files(&setup.cfg)
        } else {
            vec![]
        };
        if !hf.is_empty() {
            // Beside the checkpoints, so any of them can be an --init.
            fs_err::create_dir_all(run_dir.checkpoints())
                .map_err(TrainError::io(&run_dir.checkpoints()))?;
        }
        for (name, content) in &hf {
            checkpoint::write_json(&run_dir.checkpoints().join(name), content)?;
        }
        let norm = Normalizer::new(built.device);
        Ok(Trainer {
            args,
            reporter,
            quiet,
            started,
            setup,
            built,
            feed,
            norm,
            metrics,
            errors,
            state,
            metadata,
            pos,
            last_val: None,
            last_val_ema: None,
            last_val_loss: None,
            interrupted: false,
            last_loss: f64::NAN,
            last_train_acc: None,
            clips_done: 0,
            dist,
        })
    }
}
