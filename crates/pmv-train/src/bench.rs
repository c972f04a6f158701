//! Benchmarks: training steps of a model on a fixed batch (or fed by the loader), and
//! the loader alone.
//!
//! `bench` times what a training step costs (forward, loss, backward, AdamW) with the
//! trainer's own code paths, so it can stand beside a PyTorch eager script of the same
//! model on the same GPU (`scripts/bench_gpu.sh`). `bench-loader` times how many clips
//! per second the shard loader delivers. Both print numbers; neither writes anything.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tch::{Device, Kind, Tensor, nn};

use super::cli::{BenchArgs, BenchLoaderArgs, ModelName};
use super::data;
use super::data::loader::{AutoAugment, Labels, Loader, LoaderSpec, Normalizer, Views};
use super::device::default_workers;
use super::device::device_name;
use super::error::TrainError;
use super::models::videomae::VideoMaeConfig;
use super::models::{self, ModelSpec, Noise};
use super::optim::{AdamW, AdamWConfig, ParamRule};
use super::rng::{Purpose, Rng};
use super::run::{EraseMode, RandomErase};

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// `pmv-data-train bench`.
pub fn model_bench(args: &BenchArgs) -> Result<serde_json::Value, TrainError> {
    let device = crate::device::resolve_device(args.runtime.device)?;
    if let Some(t) = args.runtime.threads {
        tch::set_num_threads(t);
    }
    let precision = crate::device::resolve_precision(args.runtime.precision, device);
    let spec = bench_spec(args)?;
    let (h, w) = args.size;
    let t = args.frames;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = spec.build(&vs.root(), precision)?;
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let params: i64 = vars.iter().map(|(_, t)| t.numel() as i64).sum();
    let mut opt = AdamW::new(vars, device, AdamWConfig::default(), |name, shape| {
        ParamRule {
            lr_scale: 1.0,
            decay: models::decays(name, shape),
        }
    });
    let norm = Normalizer::new(device);
    let b = args.batch as i64;
    let classes = args.classes as i64;

    // The data: one random batch kept on the device, or the loader over shards.
    let fixed = Tensor::randint(
        256,
        [b, t as i64, h as i64, w as i64, 3],
        (Kind::Uint8, device),
    );
    let fixed_labels = Tensor::randint(classes, [b], (Kind::Int64, device));
    let mut loader_state = match &args.shards {
        Some(s) => {
            let split = data::shards_split(s, "train", true)?;
            let (readers, problems) = data::open_split(&split, false);
            if let Some(p) = problems.first() {
                return Err(TrainError::Invalid(p.error.clone()));
            }
            let shape = readers
                .iter()
                .find_map(|r| r.index().first().map(|x| x.shape))
                .ok_or_else(|| TrainError::Invalid("the shards hold no samples".into()))?;
            if shape[1] != t {
                return Err(TrainError::Usage(format!(
                    "the shards have {} frames per clip; pass --frames {}",
                    shape[1], shape[1]
                )));
            }
            let spec = Arc::new(LoaderSpec {
                shards: readers,
                shape,
                out: (h, w),
                views: Views::Train {
                    scale: (0.25, 1.0),
                    ratio: (0.75, 1.3333),
                    flip: 0.5,
                    jitter: None,
                    repeats: 1,
                    erase: None,
                    auto_augment: None,
                },
                labels: Labels::Single(args.classes),
                batch: args.batch,
                workers: default_workers(&args.runtime, device),
                prefetch: args.runtime.prefetch,
                shuffle: true,
                shuffle_buffer: 1024,
                drop_last: true,
                seed: 0,
                pin: device.is_cuda().then_some(device),
                ids: false,
                extras: None,
                share: Default::default(),
            });
            if spec.batches() == 0 {
                return Err(TrainError::Usage("fewer samples than one batch".into()));
            }
            Some((Arc::clone(&spec), 0u64, Loader::start(spec, 0, 0)))
        }
        None => None,
    };
    let mut loader_wait = 0.0f64;

    let total = args.warmup + args.steps;
    let mut timed_from = Instant::now();
    for step in 0..total {
        if step == args.warmup {
            sync(device);
            timed_from = Instant::now();
            loader_wait = 0.0;
        }
        let (x, labels) = match loader_state.as_mut() {
            None => (norm.apply(&fixed), fixed_labels.shallow_clone()),
            Some((spec, epoch, loader)) => {
                let wait = Instant::now();
                let batch = match loader.next() {
                    Some(b) => b?,
                    None => {
                        *epoch += 1;
                        *loader = Loader::start(Arc::clone(spec), *epoch, 0);
                        loader
                            .next()
                            .ok_or_else(|| TrainError::Invalid("empty loader".into()))??
                    }
                };
                loader_wait += wait.elapsed().as_secs_f64();
                (batch.input(device, &norm), batch.label_tensor(device))
            }
        };
        let n = labels.size()[0];
        let noise_len = net.noise_len(n as usize);
        let noise = (noise_len > 0).then(|| {
            let mut r = Rng::stream(0, Purpose::Noise, step as u64, 0);
            let v: Vec<f32> = (0..noise_len).map(|_| r.f32()).collect();
            Noise::new(&v, device)
        });
        let loss = match net.mae() {
            Some(mae) => {
                let (slots, per_slot) = mae.grid(&x);
                let mut r = Rng::stream(0, Purpose::Mask, step as u64, 0);
                let mask = super::models::mae::TubeMask::draw(
                    &mut r,
                    n as usize,
                    slots,
                    per_slot,
                    mae.cfg.mask_ratio,
                    device,
                );
                mae.loss(&x, &mask, noise.as_ref())
            }
            None => {
                let off = 0.1 / classes as f64;
                let mut y = Tensor::full([n, classes], off, (Kind::Float, device));
                let _ = y.scatter_value_(1, &labels.unsqueeze(1), 0.9 + off);
                let logits = net.forward(&x, true, noise.as_ref());
                -(&y * logits.log_softmax(-1, Kind::Float))
                    .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
                    .mean(Kind::Float)
            }
        };
        loss.backward();
        opt.bind_grads();
        opt.update(1e-4);
        opt.zero_grad();
    }
    sync(device);
    let secs = timed_from.elapsed().as_secs_f64();
    let clips = (args.steps * args.batch) as f64;
    Ok(json!({
        "bench": "train-step",
        "implementation": "pmv-data-train (tch/libtorch)",
        "model": args.model.as_str(),
        "objective": if args.pretrain.is_some() { "masked pre-training" } else { "classification" },
        "mask_ratio": args.pretrain,
        "parameters": params,
        "batch": args.batch,
        "frames": t,
        "size": [h, w],
        "device": device_name(device),
        "device_name": device_label(device),
        "precision": precision,
        "data": if args.shards.is_some() { "shards through the loader" } else { "one synthetic batch on the device" },
        "steps": args.steps,
        "warmup": args.warmup,
        "seconds": secs,
        "step_ms": 1000.0 * secs / args.steps.max(1) as f64,
        "clips_per_s": clips / secs.max(1e-9),
        "loader_wait_s": args.shards.as_ref().map(|_| loader_wait),
    }))
}

/// The model `bench-model` times: `--model` at `--size` and `--frames`, with `--classes`
/// outputs, or its masked-autoencoder pre-training with `--pretrain`.
fn bench_spec(args: &BenchArgs) -> Result<ModelSpec, TrainError> {
    let (h, w) = args.size;
    let t = args.frames;
    Ok(match args.model {
        ModelName::Tiny3d => ModelSpec::Tiny3d {
            width: 16,
            classes: args.classes,
            dropout: 0.3,
        },
        // The rates the PMV-400 recipes train with (scripts/bench_models_torch.py builds
        // the reference models with the same).
        ModelName::X3dM | ModelName::X3dL | ModelName::MvitV2S | ModelName::UniformerS => {
            ModelSpec::baseline(args.model.as_str(), args.classes, [t, h, w], None, None)
                .expect("a baseline preset")
                .map_err(TrainError::Usage)?
        }
        m if args.pretrain.is_some() => {
            let mut encoder = VideoMaeConfig::preset(m.as_str(), 0, t, (h, w))
                .ok_or_else(|| TrainError::Usage("bench --pretrain takes vit-s or vit-b".into()))?;
            encoder.use_mean_pooling = false;
            ModelSpec::Mae {
                name: m.as_str().into(),
                config: super::models::mae::MaeConfig {
                    decoder: super::models::mae::DecoderConfig::for_encoder(
                        encoder.hidden_size,
                        4,
                        None,
                    ),
                    encoder,
                    mask_ratio: args.pretrain.unwrap_or(0.9),
                    norm_pix_loss: true,
                },
                drop_path: 0.0,
            }
        }
        m => ModelSpec::Videomae {
            name: m.as_str().into(),
            config: VideoMaeConfig::preset(m.as_str(), args.classes, t, (h, w))
                .ok_or_else(|| TrainError::Usage("bench takes tiny3d, vit-s or vit-b".into()))?,
            drop_path: 0.1,
        },
    })
}

fn device_label(device: Device) -> String {
    match device {
        Device::Cuda(_) => "CUDA".into(),
        _ => format!("CPU, {} threads", tch::get_num_threads()),
    }
}

/// `pmv-data-train bench-loader`.
pub fn loader_bench(args: &BenchLoaderArgs) -> Result<serde_json::Value, TrainError> {
    let split = data::shards_split(&args.shards, "train", true)?;
    let (readers, problems) = data::open_split(&split, false);
    if let Some(p) = problems.first() {
        return Err(TrainError::Invalid(p.error.clone()));
    }
    let shape = readers
        .iter()
        .find_map(|r| r.index().first().map(|x| x.shape))
        .ok_or_else(|| TrainError::Invalid("the shards hold no samples".into()))?;
    let out = args.size.unwrap_or((shape[2], shape[3]));
    let bytes_on_disk: u64 = readers.iter().map(|r| r.bytes().len() as u64).sum();
    let spec = Arc::new(LoaderSpec {
        shards: readers,
        shape,
        out,
        views: Views::Train {
            scale: args.crop_scale,
            ratio: (0.75, 1.3333),
            flip: 0.5,
            jitter: None,
            repeats: args.repeated_aug.max(1),
            erase: (args.random_erase > 0.0).then_some(RandomErase {
                probability: args.random_erase,
                mode: EraseMode::Pixel,
                max_count: 1,
            }),
            auto_augment: args
                .auto_augment
                .as_deref()
                .map(AutoAugment::parse)
                .transpose()
                .map_err(|e| TrainError::Usage(format!("--auto-augment: {e}")))?,
        },
        labels: Labels::Single(usize::MAX),
        batch: args.batch,
        workers: args.workers.max(1),
        prefetch: 4,
        shuffle: true,
        shuffle_buffer: 1024,
        drop_last: false,
        seed: 0,
        pin: None,
        ids: false,
        extras: None,
        share: Default::default(),
    });
    let started = Instant::now();
    let (mut clips, mut bad) = (0u64, 0u64);
    for epoch in 0..args.epochs {
        for b in Loader::start(Arc::clone(&spec), epoch, 0) {
            let b = b?;
            clips += b.rows() as u64;
            bad += b.errors.len() as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "bench": "loader",
        "shards": spec.shards.len(),
        "samples": spec.samples(),
        "sample_shape": shape,
        "output": [shape[1], out.0, out.1],
        "batch": args.batch,
        "workers": args.workers,
        "epochs": args.epochs,
        "crop_scale": [args.crop_scale.0, args.crop_scale.1],
        "auto_augment": args.auto_augment,
        "random_erase": args.random_erase,
        "repeated_aug": args.repeated_aug,
        "clips": clips,
        "bad_samples": bad,
        "seconds": secs,
        "clips_per_s": clips as f64 / secs.max(1e-9),
        "shard_mb_per_s": (bytes_on_disk * args.epochs) as f64 / 1e6 / secs.max(1e-9),
    }))
}
