//! Evaluation: every view of every video through the model, softmax (sigmoid for
//! multi-label) averaged over the views, and the reports.
//!
//! Owns the evaluation pass (also the per-epoch validation of training) and the `eval`
//! command's outputs in `<run>/eval-<split>-<clips>x<crops>/`: `eval.json` (top-1, top-5,
//! per-class accuracy, confusion matrix, counts), `predictions.csv` (probabilities at
//! full `f32` precision), `probabilities.npy` (every class's probability, float32
//! `(samples, classes)`, rows in the csv's order), and a PNG of the confusion matrix (up to 50 classes) or of per-class accuracy. It reads runs and
//! shards and never changes a run's weights or state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use pmv_core::report::{Reporter, Unit};
use serde_json::json;
use tch::{Device, Kind, Tensor, nn};

use super::checkpoint::{self, RunDir, State};
use super::cli::EvalArgs;
use super::data::loader::{Labels, Loader, LoaderSpec, Normalizer, SampleError, Views};
use super::data::{self, ShardProblem};
use super::device::device_name;
use super::dist::Dist;
use super::error::TrainError;
use super::metrics::{self, Prediction, Summary, Tally};
use super::models::{self, Net};
use super::plot;
use super::run::{self, RunConfig};

/// What an evaluation pass found.
pub struct EvalResult {
    pub summary: Summary,
    pub predictions: Vec<Prediction>,
    pub errors: Vec<SampleError>,
}

/// One evaluated sample, before the tally.
struct Row {
    position: u64,
    key: String,
    id: String,
    labels: Vec<u32>,
    probs: Vec<f32>,
}

/// Runs every batch of `spec` through `net` (no gradients, eval mode). With several
/// ranks each evaluates its share of the batches, and every rank then holds every
/// sample's result, tallied in the epoch's order as one rank would have.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    net: &Net,
    spec: Arc<LoaderSpec>,
    device: Device,
    names: &[String],
    keep_predictions: bool,
    reporter: &dyn Reporter,
    label: &str,
    dist: &Dist,
) -> Result<EvalResult, TrainError> {
    let classes = names.len();
    let multi = matches!(spec.labels, Labels::Multi(_));
    let norm = Normalizer::new(device);
    let mut rows: Vec<Row> = vec![];
    let mut errors = vec![];
    let loader = Loader::start(Arc::clone(&spec), 0, 0);
    reporter.begin(label, Some(loader.batches() as u64), Unit::Items);
    let result = tch::no_grad(|| -> Result<(), TrainError> {
        for batch in loader {
            let b = batch?;
            errors.extend(b.errors.iter().cloned());
            reporter.advance(1);
            if b.is_empty() {
                continue;
            }
            let n = b.len() as i64;
            let x = b.input(device, &norm);
            let extra = b.extra(device, &norm);
            let logits = net.forward_with(&x, extra.as_ref(), false, None);
            let probs = if multi {
                logits.sigmoid()
            } else {
                logits.softmax(-1, Kind::Float)
            };
            let probs = probs
                .view([n, b.views as i64, classes as i64])
                .mean_dim(1, false, Kind::Float)
                .to_device(Device::Cpu)
                .contiguous();
            let flat: Vec<f32> = Vec::try_from(probs.view([-1]))
                .map_err(|e| TrainError::Invalid(format!("reading predictions: {e}")))?;
            for i in 0..b.len() {
                rows.push(Row {
                    position: b.positions.get(i).copied().unwrap_or_default(),
                    key: b.keys[i].clone(),
                    id: b.ids.get(i).cloned().unwrap_or_default(),
                    labels: b.all_labels[i].clone(),
                    probs: flat[i * classes..(i + 1) * classes].to_vec(),
                });
            }
        }
        Ok(())
    });
    reporter.end();
    result?;
    if dist.is_group() {
        rows = gather_rows(dist, rows, classes)?;
        errors = dist.gather_json(errors, "sample errors")?;
    }
    let mut tally = Tally::new(classes, multi);
    let mut predictions = vec![];
    for r in rows {
        let top = tally.add(&r.probs, &r.labels);
        if keep_predictions {
            predictions.push(Prediction {
                key: r.key,
                id: r.id,
                labels: r.labels,
                top,
                probs: r.probs,
            });
        }
    }
    Ok(EvalResult {
        summary: tally.summary(names),
        predictions,
        errors,
    })
}

/// Every rank's rows, in the epoch's order: the probabilities as one tensor, the rest
/// as lines of `position \t labels \t key \t id`.
fn gather_rows(dist: &Dist, rows: Vec<Row>, classes: usize) -> Result<Vec<Row>, TrainError> {
    let probs: Vec<f32> = rows.iter().flat_map(|r| r.probs.iter().copied()).collect();
    let probs = Tensor::from_slice(&probs).view([rows.len() as i64, classes as i64]);
    let mut text = String::new();
    for r in &rows {
        let labels: Vec<String> = r.labels.iter().map(u32::to_string).collect();
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            r.position,
            labels.join(","),
            r.key.replace(['\t', '\n'], " "),
            r.id.replace(['\t', '\n'], " ")
        ));
    }
    let probs = dist.gather_rows(&probs)?;
    let probs: Vec<f32> = Vec::try_from(probs.flatten(0, -1))
        .map_err(|e| TrainError::Dist(format!("gathering predictions: {e}")))?;
    let mut all = vec![];
    for part in dist.gather_bytes(text.as_bytes())? {
        for line in String::from_utf8_lossy(&part).lines() {
            let f: Vec<&str> = line.splitn(4, '\t').collect();
            let [position, labels, key, id] = f[..] else {
                return Err(TrainError::Dist(format!(
                    "gathering predictions: bad line {line:?}"
                )));
            };
            let at = all.len() * classes;
            all.push(Row {
                position: position.parse().unwrap_or(u64::MAX),
                key: key.to_owned(),
                id: id.to_owned(),
                labels: labels
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| l.parse().ok())
                    .collect(),
                probs: probs.get(at..at + classes).unwrap_or_default().to_vec(),
            });
        }
    }
    if all.len() * classes != probs.len() {
        return Err(TrainError::Dist(format!(
            "gathering predictions: {} rows but {} probabilities",
            all.len(),
            probs.len()
        )));
    }
    all.sort_by_key(|r| r.position);
    Ok(all)
}

/// The weights an evaluation uses: `--checkpoint`, else the final model, else the last
/// checkpoint of an unfinished run; with `ema`, the moving average of the weights
/// (`model-ema.safetensors`, else the last checkpoint's).
fn weights_of(run: &RunDir, explicit: Option<&Path>, ema: bool) -> Result<PathBuf, TrainError> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if ema {
        let fin = run.file("model-ema.safetensors");
        if fin.exists() {
            return Ok(fin);
        }
        return match checkpoint::load_state(run)? {
            Some(State { ema: Some(e), .. }) => Ok(run.file(&e)),
            _ => Err(TrainError::Usage(format!(
                "--ema: {} has no moving average of its weights (train with --model-ema)",
                run.path().display()
            ))),
        };
    }
    let fin = run.file("model.safetensors");
    if fin.exists() {
        return Ok(fin);
    }
    match checkpoint::load_state(run)? {
        Some(State { weights, .. }) => Ok(run.file(&weights)),
        None => Err(TrainError::Invalid(format!(
            "{} has no weights yet (no model.safetensors and no checkpoint)",
            run.path().display()
        ))),
    }
}

/// The views of `--views`, resolved against the stored clips.
fn views_of(
    arg: Option<(Option<usize>, usize)>,
    stored_clips: usize,
) -> Result<(usize, usize), TrainError> {
    // Crops: 1 is the centre; n > 1 are spread evenly along the long side (3: start,
    // centre, end, as VideoMAE evaluates).
    let (clips, crops) = arg.unwrap_or((None, 3));
    let clips = clips.unwrap_or(stored_clips);
    if clips > stored_clips {
        return Err(TrainError::Usage(format!(
            "--views: {clips} clips asked for, the samples store {stored_clips}"
        )));
    }
    Ok((clips, crops))
}

/// `pmv-data-train eval`.
pub fn run(
    args: &EvalArgs,
    reporter: &dyn Reporter,
) -> Result<(serde_json::Value, u64), TrainError> {
    let started = Instant::now();
    let root = run::root_or_default(&args.root);
    let dir = run::run_path(&root, &args.run);
    if !dir.join("run.json").is_file() {
        return Err(TrainError::Invalid(format!(
            "{} is not a run directory (it has no run.json)",
            dir.display()
        )));
    }
    let (dist, device) = Dist::join(&args.dist, args.runtime.device)?;
    // Rank 0 holds the run (its lock) and writes the reports; the others only read.
    let run_dir = if dist.is_main() {
        RunDir::open(&dir)?
    } else {
        RunDir::follow(&dir)
    };
    let cfg: RunConfig = checkpoint::read_json(&run_dir.file("run.json"))?;
    if cfg.model.is_pretraining() {
        return Err(TrainError::Usage(format!(
            "{} is a pre-training run: it has no classifier to evaluate; fine-tune it with \
             train --init {}",
            dir.display(),
            dir.join("model.safetensors").display()
        )));
    }
    let weights = weights_of(&run_dir, args.checkpoint.as_deref(), args.ema)?;
    let split_data = match &args.shards {
        Some(spec) => data::shards_split(spec, &args.split, true)?,
        None => run::current_split(&cfg, &args.split)?,
    };
    let (shards, problems) = data::open_split(&split_data, args.verify);
    if shards.is_empty() {
        return Err(TrainError::Invalid(format!(
            "none of the {} shards of split {:?} could be opened: {}",
            split_data.shards.len(),
            args.split,
            problems.first().map_or("", |p| p.error.as_str())
        )));
    }
    let (clips, crops) = views_of(args.views, cfg.sample_shape[0])?;
    if let (Some(size), Some(vit)) = (args.input, cfg.model.vit()) {
        crate::cli::check_vit_input(size, vit.patch_size).map_err(TrainError::Usage)?;
    }
    if let Some((h, w)) = args.input {
        cfg.model
            .check_input([cfg.input[0], h, w])
            .map_err(|e| TrainError::Usage(format!("--input {h}x{w}: {e}")))?;
    }
    if let Some(t) = args.runtime.threads {
        tch::set_num_threads(t);
    }
    let precision = crate::device::resolve_precision(args.runtime.precision, device);
    let vs = nn::VarStore::new(device);
    let net = cfg.model.build(&vs.root(), precision)?;
    models::load_into(
        &vs,
        &cfg.model,
        &weights,
        models::read_weights(&weights)?,
        false,
    )?;
    let classes = cfg.classes.len();
    let spec = Arc::new(LoaderSpec {
        shards,
        shape: cfg.sample_shape,
        out: args.input.unwrap_or((cfg.input[1], cfg.input[2])),
        views: Views::Eval {
            clips,
            crops,
            short_side: args.test_scale.or(cfg.hyper.test_scale),
        },
        labels: if cfg.multi_label {
            Labels::Multi(classes)
        } else {
            Labels::Single(classes)
        },
        batch: args.batch_size.max(1),
        workers: super::device::default_workers(&args.runtime, device),
        prefetch: args.runtime.prefetch,
        shuffle: false,
        shuffle_buffer: 0,
        drop_last: false,
        seed: cfg.seed,
        pin: device.is_cuda().then_some(device),
        ids: true,
        extras: super::run::extras_of(&cfg.model, &run_dir)?,
        share: dist.share(),
    });
    // The moving average's reports sit beside the model's, never over them.
    let views_label = format!("{clips}x{crops}");
    let dir_label = format!("{views_label}{}", if args.ema { "-ema" } else { "" });
    let result = evaluate(
        &net,
        spec,
        device,
        &cfg.classes,
        true,
        reporter,
        &format!("eval {} ({views_label} views)", args.split),
        &dist,
    )?;
    if !dist.is_main() {
        // Rank 0 writes the reports and speaks for the group.
        return Ok((json!({"command": "eval", "rank": dist.rank()}), 0));
    }
    let out_dir = match (&args.out, &args.shards) {
        (Some(p), _) => p.clone(),
        (None, None) => dir.join(format!("eval-{}-{dir_label}", args.split)),
        // Other shards than the run's own: a report beside, not over, the run's.
        (None, Some(shards)) => {
            dir.join(format!("eval-shards-{}-{dir_label}", shards_label(shards)))
        }
    };
    let written = write_reports(
        &out_dir,
        &cfg,
        &result,
        &problems,
        json!({
            "run_dir": dir,
            "split": args.split,
            "views": { "clips": clips, "crops": crops },
            "weights": weights,
            "ema": args.ema,
            "device": device_name(device),
            "ranks": dist.world(),
            "precision": precision,
            "shards": split_data.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            "duration_s": started.elapsed().as_secs_f64(),
        }),
    )?;
    let bad = result.errors.len() as u64
        + problems
            .iter()
            .map(|p| p.samples.unwrap_or(1) as u64)
            .sum::<u64>();
    let s = &result.summary;
    let summary = json!({
        "command": "eval",
        "run_dir": dir,
        "split": args.split,
        "views": views_label,
        "samples": s.samples,
        "top1": s.top1,
        "top5": s.top5,
        "mean_class_accuracy": s.mean_class_accuracy,
        "map": s.map,
        "loss": s.loss,
        "bad_samples": bad,
        "eval_json": written.eval_json,
        "predictions_csv": written.predictions_csv,
        "probabilities_npy": written.probabilities_npy,
        "plots": written.plots,
        "weights": weights,
        "duration_s": started.elapsed().as_secs_f64(),
    });
    Ok((summary, bad))
}

/// The files [`write_reports`] wrote.
pub struct Written {
    pub eval_json: PathBuf,
    pub predictions_csv: PathBuf,
    pub probabilities_npy: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Writes `eval.json`, `predictions.csv`, `probabilities.npy` and the class plot into
/// `dir`.
pub fn write_reports(
    dir: &Path,
    cfg: &RunConfig,
    result: &EvalResult,
    problems: &[ShardProblem],
    context: serde_json::Value,
) -> Result<Written, TrainError> {
    fs_err::create_dir_all(dir).map_err(TrainError::io(dir))?;
    let s = &result.summary;
    let mut doc = json!({
        "top1": s.top1,
        "top5": s.top5,
        "mean_class_accuracy": s.mean_class_accuracy,
        "loss": s.loss,
        "counts": {
            "samples": s.samples,
            "bad_samples": result.errors.len(),
            "unreadable_shards": problems.len(),
        },
        "classes": cfg.classes.len(),
        "multi_label": cfg.multi_label,
        "per_class": s.per_class,
        "bad_samples": result.errors,
        "unreadable_shards": problems,
        "created_at": pmv_core::util::rfc3339(pmv_core::util::now_unix()),
    });
    if let Some(m) = s.map {
        doc["map"] = json!(m);
    }
    if let Some(c) = &s.confusion {
        doc["confusion"] = json!(c);
    }
    if let (Some(obj), Some(ctx)) = (doc.as_object_mut(), context.as_object()) {
        for (k, v) in ctx {
            obj.insert(k.clone(), v.clone());
        }
    }
    let eval_json = dir.join("eval.json");
    checkpoint::write_json(&eval_json, &doc)?;

    let predictions_csv = dir.join("predictions.csv");
    let mut text = String::from(metrics::CSV_HEADER);
    for p in &result.predictions {
        text.push_str(&metrics::csv_row(p, &cfg.classes));
    }
    pmv_core::util::write_atomic(&predictions_csv, text.as_bytes())
        .map_err(TrainError::io(&predictions_csv))?;

    let probabilities_npy = dir.join("probabilities.npy");
    let classes = cfg.classes.len();
    let mut npy = npy_f32_header(&[result.predictions.len(), classes]);
    npy.reserve(result.predictions.len() * classes * 4);
    for p in &result.predictions {
        if p.probs.len() != classes {
            return Err(TrainError::Invalid(format!(
                "{}: {} probabilities for {classes} classes",
                p.key,
                p.probs.len()
            )));
        }
        for q in &p.probs {
            npy.extend_from_slice(&q.to_le_bytes());
        }
    }
    pmv_core::util::write_atomic(&probabilities_npy, &npy)
        .map_err(TrainError::io(&probabilities_npy))?;

    let mut plots = vec![];
    let title_top1 = format!("top-1 {:.1}%", 100.0 * s.top1);
    match &s.confusion {
        Some(c) if cfg.classes.len() <= plot::CONFUSION_MAX_CLASSES => {
            plots.push(plot::confusion(
                &dir.join("confusion.png"),
                &format!("Confusion ({title_top1}; rows: true class)"),
                c,
                &cfg.classes,
            )?);
        }
        _ => {
            let accs: Vec<f64> = s.per_class.iter().filter_map(|c| c.accuracy).collect();
            plots.push(plot::per_class(
                &dir.join("per_class.png"),
                &format!("Per-class accuracy ({title_top1}, {} classes)", accs.len()),
                &accs,
            )?);
        }
    }
    Ok(Written {
        eval_json,
        predictions_csv,
        probabilities_npy,
        plots,
    })
}

/// An NPY 1.0 header for a C-order little-endian float32 array of `shape`: the magic,
/// the version, the header length and the header dict, padded with spaces to a
/// multiple of 64 bytes and ended by a newline (what `numpy.load` reads).
fn npy_f32_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = u16::try_from(dict.len() + pad + 1).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(unpadded + pad);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// A folder-name part for `--shards` (a directory or a glob): its last plain path
/// component, with anything but `[A-Za-z0-9._-]` written `_`.
fn shards_label(shards: &str) -> String {
    let name = std::path::Path::new(shards.trim_end_matches('/'))
        .components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| !c.contains(['*', '?', '[']))
        .unwrap_or("shards");
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_numpy_1_0() {
        let h = npy_f32_header(&[3, 7]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 7), }"));
        assert!(text.ends_with(" \n"));
        assert!(
            std::str::from_utf8(&npy_f32_header(&[0])[10..])
                .unwrap()
                .contains("(0,)")
        );
    }
}
