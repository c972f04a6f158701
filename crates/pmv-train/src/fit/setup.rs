//! The run's setup, before the first step: where the run lives, which shards it reads,
//! `run.json`, the model and optimiser on the device (fresh, from `--init`, or from the
//! checkpoint a resume continues), and the loaders.
//!
//! Owns the checks a command line must pass before anything is trained, in the order a
//! user meets them, and the one line that announces the run. It never takes a step and
//! never writes a checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pmv_shard::ShardReader;
use pmv_term::output::errln;
use tch::{Device, Tensor, nn};

use super::ema::ModelEma;
use super::plan::{self, DataPlan};
use super::records::truncate_lines;
use super::tensorboard;
use crate::checkpoint::{self, RunDir, State};
use crate::cli::TrainArgs;
use crate::data::loader::{AutoAugment, Labels, LoaderSpec, Share, Views};
use crate::data::{self, ShardProblem, SplitData};
use crate::device::{Precision, default_workers, device_name};
use crate::dist::Dist;
use crate::error::TrainError;
use crate::models::mae::VideoMaePretrain;
use crate::models::{self, InitReport, ModelSpec, Net};
use crate::optim::{AdamW, ParamRule, Schedule};
use crate::run::{self, HyperParams, RUN_VERSION, RunConfig};

/// What the setup decided: where the run lives, what it reads and what it trains.
pub(super) struct Setup {
    pub(super) plan: DataPlan,
    pub(super) out: PathBuf,
    pub(super) run_dir: RunDir,
    /// The checkpoint a resumed run continues from.
    pub(super) state: Option<State>,
    pub(super) val_split: Option<SplitData>,
    /// Shards of both splits that could not be opened.
    pub(super) shard_problems: Vec<ShardProblem>,
    pub(super) val_shard_problems: Vec<ShardProblem>,
    pub(super) sample_shape: [usize; 5],
    pub(super) classes: Vec<String>,
    pub(super) pretraining: bool,
    pub(super) multi_label: bool,
    pub(super) input: [usize; 3],
    pub(super) model_spec: ModelSpec,
    pub(super) hyper: HyperParams,
    /// `hyper.auto_augment`, parsed.
    pub(super) auto_augment: Option<AutoAugment>,
    pub(super) cfg: RunConfig,
}

/// The opened shards of both splits (they move into the loaders).
pub(super) struct Readers {
    train: Vec<Arc<ShardReader>>,
    val: Vec<Arc<ShardReader>>,
}

/// The run directory and what it already holds.
struct Opened {
    out: PathBuf,
    run_dir: RunDir,
    existing: bool,
    stored: Option<RunConfig>,
    state: Option<State>,
}

/// The splits a run reads, opened.
struct OpenedData {
    val_split: Option<SplitData>,
    train_split: SplitData,
    readers: Readers,
    shard_problems: Vec<ShardProblem>,
    val_shard_problems: Vec<ShardProblem>,
}

/// [`prepare`] on every rank: rank 0 first (it creates the run, or checks the one it
/// resumes, and writes `run.json`), then the others, which read what rank 0 wrote. A
/// rank that fails stops every rank: itself with its error, the others naming it.
pub(super) fn prepare_ranks(args: &TrainArgs, dist: &Dist) -> Result<(Setup, Readers), TrainError> {
    if !dist.is_group() {
        return prepare(args, true, 1);
    }
    let world = dist.world();
    let first = dist.is_main().then(|| prepare(args, true, world));
    dist.agree(
        first.as_ref().is_none_or(Result::is_ok),
        "preparing the run",
    )?;
    let mine = match first {
        Some(r) => r,
        None => prepare(args, false, world),
    };
    dist.agree(mine.is_ok(), "opening the run rank 0 prepared")?;
    mine
}

/// Checks the command line, opens (or creates) the run directory and the shards, and
/// settles the model, the recipe and `run.json`: written for a fresh run, compared for
/// a resumed one.
fn prepare(args: &TrainArgs, main: bool, world: usize) -> Result<(Setup, Readers), TrainError> {
    if args.batch_size == 0 || args.epochs == 0 {
        return Err(TrainError::Usage(
            "--batch-size and --epochs must be positive".into(),
        ));
    }
    // Checked before anything is opened or created.
    let auto_augment = args
        .auto_augment
        .as_deref()
        .map(|spec| {
            AutoAugment::parse(spec)
                .map_err(|e| TrainError::Usage(format!("--auto-augment {spec}: {e}")))
        })
        .transpose()?;
    let root = run::root_or_default(&args.data.root);

    // Where the run lives; with --resume, what it recorded.
    let plan = plan::plan_data(args, &root)?;
    let opened = if main {
        open_run(args, &root, &plan)?
    } else {
        follow_run(args, &root, &plan)?
    };
    let data = open_data(args, &plan, opened.stored.as_ref())?;
    let OpenedData {
        val_split,
        train_split,
        readers,
        shard_problems,
        val_shard_problems,
    } = data;
    let sample_shape = readers
        .train
        .iter()
        .find_map(|r| r.index().first().map(|s| s.shape))
        .ok_or_else(|| TrainError::Invalid("the training shards hold no samples".into()))?;
    let classes = match &plan.classes {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            let all: Vec<_> = readers.train.iter().chain(&readers.val).cloned().collect();
            plan::classes_from_labels(&all)
        }
    };
    let pretraining = args.pretrain.is_some();
    if classes.len() < 2 && !pretraining {
        return Err(TrainError::Invalid(format!(
            "{} class(es) found; classification needs at least 2",
            classes.len()
        )));
    }
    let multi_label = if pretraining {
        false
    } else if args.multi_label {
        true
    } else if args.single_label {
        false
    } else {
        plan.multi_label
    };
    let input = plan::input_size(args, sample_shape)?;
    let mut model_spec = plan::model_spec(args, classes.len(), input)?;
    if args.multimodal {
        if pretraining {
            return Err(TrainError::Usage("pretrain has no --multimodal".into()));
        }
        if args.mixup > 0.0 || args.cutmix > 0.0 {
            return Err(TrainError::Usage(
                "--multimodal: mixup and CutMix mix frames but not covers or texts; leave them off"
                    .into(),
            ));
        }
        model_spec = plan::multimodal_spec(
            args,
            model_spec,
            classes.len(),
            &readers.train,
            &opened.run_dir,
            opened.existing,
        )?;
    }
    // A resumed run keeps the learning rates its start gave them, whatever the ranks now.
    let ranks = opened.stored.as_ref().map_or(world, |c| c.hyper.ranks);
    let hyper = plan::hyper_params(args, ranks);
    let rel_root = plan.rel_root.as_deref();
    let cfg = RunConfig {
        version: RUN_VERSION,
        source: plan.source.clone(),
        train_split: args.data.train_split.clone(),
        val_split: val_split.as_ref().map(|v| v.split.clone()),
        train_shards: run::entries(&train_split, rel_root),
        val_shards: val_split
            .as_ref()
            .map(|v| run::entries(v, rel_root))
            .unwrap_or_default(),
        classes: classes.clone(),
        multi_label,
        sample_shape,
        input,
        model: model_spec.clone(),
        init: args.init.clone(),
        hyper: hyper.clone(),
        seed: args.run.seed,
    };
    if let Some(old) = &opened.stored {
        let diffs = old.differences(&cfg);
        if !diffs.is_empty() {
            return Err(TrainError::Usage(format!(
                "--resume: this command differs from the run in {}:\n  {}\n\
                 (resume with the run's own options, or start a new run)",
                opened.out.display(),
                diffs.join("\n  ")
            )));
        }
    } else {
        checkpoint::write_json(&opened.run_dir.file("run.json"), &cfg)?;
    }
    let setup = Setup {
        plan,
        out: opened.out,
        run_dir: opened.run_dir,
        state: opened.state,
        val_split,
        shard_problems,
        val_shard_problems,
        sample_shape,
        classes,
        pretraining,
        multi_label,
        input,
        model_spec,
        hyper,
        auto_augment,
        cfg,
    };
    Ok((setup, readers))
}

/// The run directory (`--out`, or one named after the data and model), locked; with
/// `--resume`, the `run.json` and checkpoint it holds. A run already there without
/// `--resume`, or one that has finished, is a usage error.
fn open_run(args: &TrainArgs, root: &Path, plan: &DataPlan) -> Result<Opened, TrainError> {
    let out = run_path(args, root, plan);
    let existing = out.join("run.json").is_file();
    if existing && !args.run.resume {
        return Err(TrainError::Usage(format!(
            "{} already holds a run: add --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    let run_dir = RunDir::open(&out)?;
    read_run(args, out, run_dir, existing)
}

/// The run rank 0 has opened (and for a fresh run, created): its `run.json` and, with
/// `--resume`, its checkpoint; no lock taken, nothing written.
fn follow_run(args: &TrainArgs, root: &Path, plan: &DataPlan) -> Result<Opened, TrainError> {
    let out = run_path(args, root, plan);
    if !out.join("run.json").is_file() {
        return Err(TrainError::Dist(format!(
            "{} has no run.json: rank 0 did not create the run there (do the ranks share a file system?)",
            out.display()
        )));
    }
    let run_dir = RunDir::follow(&out);
    read_run(args, out, run_dir, true)
}

/// `--out`, or the default run directory named after the data and model.
fn run_path(args: &TrainArgs, root: &Path, plan: &DataPlan) -> PathBuf {
    match &args.run.out {
        Some(o) => run::run_path(root, o),
        None => pmv_core::root::DataRoot::new(root)
            .training_runs_dir()
            .join(format!(
                "{}-{}{}",
                plan.name,
                args.model.as_str(),
                if args.pretrain.is_some() {
                    "-pretrain"
                } else {
                    ""
                }
            )),
    }
}

/// What the run directory holds: `run.json` when `existing`, the checkpoint with
/// `--resume`. A finished run is a usage error.
fn read_run(
    args: &TrainArgs,
    out: PathBuf,
    run_dir: RunDir,
    existing: bool,
) -> Result<Opened, TrainError> {
    let stored: Option<RunConfig> = if existing {
        Some(checkpoint::read_json(&run_dir.file("run.json"))?)
    } else {
        None
    };
    let state: Option<State> = if args.run.resume {
        checkpoint::load_state(&run_dir)?
    } else {
        None
    };
    if state.as_ref().is_some_and(|s| s.finished) {
        return Err(TrainError::Usage(format!(
            "{} has finished training; evaluate it, or start a new run with --init {}",
            out.display(),
            run_dir.file("model.safetensors").display()
        )));
    }
    Ok(Opened {
        out,
        run_dir,
        existing,
        stored,
        state,
    })
}

/// Opens the shards of both splits. With `--strict`, the first shard that cannot be
/// opened is an error; without, it is left out (and reported by the caller).
fn open_data(
    args: &TrainArgs,
    plan: &DataPlan,
    stored: Option<&RunConfig>,
) -> Result<OpenedData, TrainError> {
    // Data: a fresh run takes the current shards; a resumed one the shards it recorded.
    let (train_split, val_split) = match stored {
        Some(cfg) => (
            run::recorded_split(cfg, &cfg.train_split, &cfg.train_shards)?,
            match &cfg.val_split {
                Some(v) if !cfg.val_shards.is_empty() => {
                    Some(run::recorded_split(cfg, v, &cfg.val_shards)?)
                }
                _ => None,
            },
        ),
        None => (plan.train.clone(), plan.val.clone()),
    };
    let (train_readers, mut shard_problems) = data::open_split(&train_split, args.data.verify);
    if train_readers.is_empty() {
        return Err(TrainError::Invalid(format!(
            "none of the {} training shards could be opened; first: {}",
            train_split.shards.len(),
            shard_problems.first().map_or("", |p| p.error.as_str())
        )));
    }
    if args.run.strict
        && let Some(p) = shard_problems.first()
    {
        return Err(TrainError::BadSample(p.error.clone()));
    }
    let (val_readers, val_problems) = match &val_split {
        Some(v) => data::open_split(v, args.data.verify),
        None => (vec![], vec![]),
    };
    if args.run.strict
        && let Some(p) = val_problems.first()
    {
        return Err(TrainError::BadSample(p.error.clone()));
    }
    let val_shard_problems = val_problems.clone();
    shard_problems.extend(val_problems);
    Ok(OpenedData {
        val_split,
        train_split,
        readers: Readers {
            train: train_readers,
            val: val_readers,
        },
        shard_problems,
        val_shard_problems,
    })
}

/// The model and its optimiser on the device.
pub(super) struct Built {
    pub(super) device: Device,
    pub(super) precision: Precision,
    pub(super) vs: nn::VarStore,
    pub(super) net: Net,
    pub(super) opt: AdamW,
    /// Trainable parameters.
    pub(super) params: i64,
    pub(super) init_report: Option<InitReport>,
    /// The weights' moving average (`--model-ema`).
    pub(super) ema: Option<ModelEma>,
}

/// Builds the model on the device the command asks for, loads `--init` into a fresh
/// run (and says what it loaded), and sets up AdamW with the parameter rules (weight
/// decay, layer-wise lr decay).
pub(super) fn build(
    args: &TrainArgs,
    s: &Setup,
    quiet: bool,
    device: Device,
) -> Result<Built, TrainError> {
    // Model and optimiser.
    if let Some(t) = args.run.runtime.threads {
        tch::set_num_threads(t);
    }
    let precision = crate::device::resolve_precision(args.run.runtime.precision, device);
    tch::manual_seed(args.run.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = s.model_spec.build(&vs.root(), precision)?;
    if s.pretraining && args.init.is_none() && s.state.is_none() {
        VideoMaePretrain::xavier_init(&vs);
    }
    let mut init_report: Option<InitReport> = None;
    if let (Some(init), None) = (&args.init, &s.state) {
        let r = models::load_into(&vs, &s.model_spec, init, models::read_weights(init)?, true)?;
        for n in &r.reinitialised {
            tracing::warn!("--init: {n} re-initialised");
        }
        if !r.set_aside.is_empty() {
            tracing::info!(
                "--init: {} pre-training tensors set aside (decoder, mask token, final norm)",
                r.set_aside.len()
            );
        }
        if !quiet {
            errln!(
                "init: {} tensors from {}; head re-initialised: {}; set aside: {}",
                r.loaded,
                init.display(),
                if r.reinitialised.is_empty() {
                    "none".to_owned()
                } else {
                    r.reinitialised.join(", ")
                },
                r.set_aside.len()
            );
        }
        init_report = Some(r);
    }
    let mut trainable: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    trainable.sort_by(|a, b| a.0.cmp(&b.0));
    let params: i64 = trainable.iter().map(|(_, t)| t.numel() as i64).sum();
    let layer_decay = s.hyper.layer_decay;
    let opt = AdamW::new(trainable, device, s.hyper.adamw, |name, shape| {
        let (layer, depth) = net.layer_of(name);
        ParamRule {
            lr_scale: layer_decay.powi((depth - layer) as i32),
            decay: models::decays(name, shape),
        }
    });
    // The average starts from the initial weights (after --init), as timm's does; a
    // resumed run loads the checkpoint's over it.
    let ema = match s.hyper.model_ema {
        Some(decay) => Some(ModelEma::new(&vs, &s.model_spec, precision, decay)?),
        None => None,
    };
    Ok(Built {
        device,
        precision,
        vs,
        net,
        opt,
        params,
        init_report,
        ema,
    })
}

/// Every rank starts from rank 0's weights and buffers (the same seed builds the same
/// model on every rank; this makes it so whatever a device's kernels do), after
/// checking that every rank built a model of the same size.
pub(super) fn same_start(dist: &Dist, b: &mut Built) -> Result<(), TrainError> {
    if !dist.is_group() {
        return Ok(());
    }
    dist.check_same("trainable parameters", &[b.params])?;
    tch::no_grad(|| -> Result<(), TrainError> {
        dist.broadcast(b.opt.params_mut())?;
        for (_, mut t) in buffers(&b.vs) {
            dist.broadcast(&mut t)?;
        }
        Ok(())
    })
}

/// The model's tensors that are not trained (batch norm's running statistics, fixed
/// tables), in name order: every rank makes its collectives on them in the same order.
pub(super) fn buffers(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut buffers: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| !t.requires_grad())
        .collect();
    buffers.sort_by(|a, b| a.0.cmp(&b.0));
    buffers
}

/// Where the step loop stands: a fresh run at zero, a resumed one at its checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Position {
    pub(super) step: u64,
    pub(super) epoch: u64,
    pub(super) batch_in_epoch: usize,
    pub(super) bad_samples: u64,
    /// The step a resumed run continued from.
    pub(super) resumed_from: Option<u64>,
    /// The ranks the checkpoint was saved with (`batch_in_epoch` counts theirs).
    pub(super) saved_world: usize,
}

/// With a checkpoint: loads its weights and optimiser state, and drops the lines of
/// `metrics.jsonl`, its TensorBoard events and `errors.jsonl` written after it (they
/// are written again).
pub(super) fn resume(
    s: &Setup,
    b: &mut Built,
    quiet: bool,
    dist: &Dist,
) -> Result<Position, TrainError> {
    let mut pos = Position {
        resumed_from: s.state.as_ref().map(|s| s.step),
        saved_world: 1,
        ..Position::default()
    };
    let Some(st) = &s.state else {
        return Ok(pos);
    };
    let run_dir = &s.run_dir;
    let w = run_dir.file(&st.weights);
    models::load_into(&b.vs, &s.model_spec, &w, models::read_weights(&w)?, false)?;
    let o = run_dir.file(&st.optimizer);
    b.opt
        .load_state(models::read_weights(&o)?, st.step)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", o.display())))?;
    if let Some(ema) = &b.ema {
        let Some(file) = &st.ema else {
            return Err(TrainError::Invalid(format!(
                "{}: the checkpoint holds no moving average of the weights",
                run_dir.file("state.json").display()
            )));
        };
        let e = run_dir.file(file);
        ema.load(models::read_weights(&e)?, &e.display().to_string())?;
    }
    pos.step = st.step;
    pos.epoch = st.epoch;
    pos.batch_in_epoch = st.batch_in_epoch;
    pos.bad_samples = st.bad_samples;
    pos.saved_world = st.world.max(1);
    if !dist.is_main() {
        // Rank 0 cuts the run's line files back; the others only load.
        return Ok(pos);
    }
    // Lines written after the checkpoint are written again.
    // (A validation line belongs to an epoch the checkpoint has completed.)
    let (cut_step, cut_epoch) = (st.step, st.epoch);
    let keep = |v: &serde_json::Value| {
        let st = v["step"].as_u64().unwrap_or(u64::MAX);
        match v["kind"].as_str() {
            Some("val") => st <= cut_step && v["epoch"].as_u64().is_some_and(|e| e < cut_epoch),
            _ => st <= cut_step,
        }
    };
    truncate_lines(&run_dir.file("metrics.jsonl"), keep)?;
    // The same records leave the TensorBoard files; the run starts a new one.
    tensorboard::truncate(&run_dir.file(tensorboard::DIR), keep)?;
    truncate_lines(&run_dir.file("errors.jsonl"), |v| {
        v["step"].as_u64().is_some_and(|st| st <= cut_step)
    })?;
    if !quiet {
        errln!(
            "resuming {} at step {} (epoch {}, batch {})",
            s.out.display(),
            pos.step,
            pos.epoch + 1,
            pos.batch_in_epoch
        );
    }
    Ok(pos)
}

/// The loaders of both splits and the schedule their sizes give.
pub(super) struct Feed {
    pub(super) workers: usize,
    pub(super) train: Arc<LoaderSpec>,
    pub(super) val: Option<Arc<LoaderSpec>>,
    pub(super) steps_per_epoch: u64,
    pub(super) total_steps: u64,
    pub(super) schedule: Schedule,
}

/// The training loader (random views, shuffled, whole batches only) and the validation
/// loader (the centre view of the middle clip, in order); a training split too small
/// for one optimiser step is a usage error.
pub(super) fn feed(
    args: &TrainArgs,
    s: &Setup,
    readers: Readers,
    device: Device,
    share: Share,
) -> Result<Feed, TrainError> {
    let hp = &s.hyper;
    let input = s.input;
    let workers = default_workers(&args.run.runtime, device);
    let pin = device.is_cuda().then_some(device);
    let labels = if s.pretraining {
        Labels::None
    } else if s.multi_label {
        Labels::Multi(s.classes.len())
    } else {
        Labels::Single(s.classes.len())
    };
    let extras = run::extras_of(&s.model_spec, &s.run_dir)?;
    let train_spec = Arc::new(LoaderSpec {
        shards: readers.train,
        shape: s.sample_shape,
        out: (input[1], input[2]),
        views: Views::Train {
            scale: hp.crop_scale,
            ratio: hp.crop_ratio,
            flip: hp.flip,
            jitter: hp.jitter,
            repeats: hp.repeated_aug,
            erase: hp.random_erase,
            auto_augment: s.auto_augment.clone(),
        },
        labels,
        batch: hp.batch_size,
        workers,
        prefetch: args.run.runtime.prefetch,
        shuffle: true,
        shuffle_buffer: hp.shuffle_buffer,
        drop_last: true,
        seed: args.run.seed,
        pin,
        ids: false,
        extras: extras.clone(),
        share,
    });
    let val_readers = readers.val;
    let val_spec = (!val_readers.is_empty()).then(|| {
        Arc::new(LoaderSpec {
            shards: val_readers,
            shape: s.sample_shape,
            out: (input[1], input[2]),
            views: Views::Eval {
                clips: 1,
                crops: 1,
                short_side: hp.test_scale,
            },
            labels,
            batch: hp.batch_size,
            workers,
            prefetch: args.run.runtime.prefetch,
            shuffle: false,
            shuffle_buffer: 0,
            drop_last: false,
            seed: args.run.seed,
            pin,
            ids: true,
            extras: extras.clone(),
            share,
        })
    });
    let batches = train_spec.batches();
    let accum = hp.accum;
    let steps_per_epoch = (batches / accum) as u64;
    if steps_per_epoch == 0 {
        return Err(TrainError::Usage(format!(
            "{} training samples make no optimiser step of {} x {} clips{}",
            train_spec.samples(),
            hp.batch_size,
            accum,
            if share.world > 1 {
                format!(" on each of {} ranks", share.world)
            } else {
                String::new()
            }
        )));
    }
    let total_steps = steps_per_epoch * hp.epochs;
    let schedule = Schedule {
        lr: hp.lr,
        min_lr: hp.min_lr,
        warmup_lr: hp.warmup_lr,
        warmup_steps: (hp.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps,
    };
    Ok(Feed {
        workers,
        train: train_spec,
        val: val_spec,
        steps_per_epoch,
        total_steps,
        schedule,
    })
}

/// A checkpoint saved with another number of ranks: the same point of the epoch in
/// this run's steps. Its samples done (`batch_in_epoch` × batch × its ranks) become this
/// run's batches, whole optimiser steps only (a remainder is read again, and said);
/// the step count becomes the epochs done × steps per epoch plus those steps, so the
/// learning-rate schedule goes on at the same point of training.
pub(super) fn rescale(
    s: &Setup,
    f: &Feed,
    mut pos: Position,
    dist: &Dist,
    quiet: bool,
) -> Result<Position, TrainError> {
    let world = dist.world();
    if s.state.is_none() || pos.saved_world == world {
        return Ok(pos);
    }
    let hp = &s.hyper;
    let done = pos.batch_in_epoch * hp.batch_size * pos.saved_world;
    let per_step = hp.batch_size * hp.accum * world;
    let steps = done / per_step;
    let again = done - steps * per_step;
    let old_step = pos.step;
    pos.batch_in_epoch = steps * hp.accum;
    pos.step = pos.epoch * f.steps_per_epoch + steps as u64;
    if !quiet {
        errln!(
            "the checkpoint was saved by {} rank(s), this run has {world}: step {old_step} \
             becomes step {} (epoch {}, {done} samples of it done{})",
            pos.saved_world,
            pos.step,
            pos.epoch + 1,
            if again > 0 {
                format!("; the last {again} are read again")
            } else {
                String::new()
            }
        );
    }
    pos.saved_world = world;
    Ok(pos)
}

/// The line that says what is about to be trained, on what, for how long.
pub(super) fn announce(s: &Setup, b: &Built, f: &Feed, dist: &Dist) {
    let input = s.input;
    errln!(
        "{} {} on {} ({} train samples in {} shards{}), {} classes, input {}x{}x{}, \
         {:.1} M parameters, {} on {} ({}), {} epochs of {} steps",
        if s.pretraining { "pretrain" } else { "train" },
        s.model_spec.name(),
        s.plan.name,
        f.train.samples(),
        f.train.shards.len(),
        f.val
            .as_ref()
            .map_or(String::new(), |v| format!(", {} val", v.samples())),
        s.classes.len(),
        input[0],
        input[1],
        input[2],
        b.params as f64 / 1e6,
        match b.precision {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        },
        if dist.is_group() {
            format!(
                "{} ({} ranks over {})",
                device_name(b.device),
                dist.world(),
                dist.backend_name()
            )
        } else {
            device_name(b.device)
        },
        format_args!("{} loader threads", f.workers),
        s.hyper.epochs,
        f.steps_per_epoch
    );
}
