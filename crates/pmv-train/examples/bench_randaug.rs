//! Release-speed timing of the trainer's RandAugment ops on a 224x224 frame, in ns per
//! frame per op and for whole draws of VideoMAE's policy (the crate's own tests build
//! unoptimised):
//!
//!     cargo run --release -p pmv-train --example bench_randaug
//!
//! scripts/bench_randaug_pil.py times timm's ops on PIL the same way, for comparison.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use pmv_train::data::randaug::{Op, RandAugment, Scratch, apply};
use pmv_train::rng;

fn main() {
    let (w, h) = (224usize, 224usize);
    let mut r = rng::Rng::stream(1, rng::Purpose::Augment, 0, 0);
    // Gradients with noise: every op has work to do.
    let base: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i * 7 + (i / (w * 3)) * 3) % 256) as u8 ^ (r.next_u64() as u8 & 15))
        .collect();
    let ops = [
        Op::AutoContrast,
        Op::Equalize,
        Op::Invert,
        Op::Rotate { degrees: 21.0 },
        Op::Posterize { bits: 2 },
        Op::Solarize { threshold: 80 },
        Op::SolarizeAdd {
            add: 77,
            threshold: 128,
        },
        Op::Color { factor: 1.63 },
        Op::Contrast { factor: 0.37 },
        Op::Brightness { factor: 1.63 },
        Op::Sharpness { factor: 1.63 },
        Op::ShearX { factor: 0.21 },
        Op::ShearY { factor: -0.21 },
        Op::TranslateXRel { fraction: 0.315 },
        Op::TranslateYRel { fraction: -0.315 },
    ];
    let mut scratch = Scratch::default();
    let mut frame = base.clone();
    let iters = 400;
    let time = |f: &mut dyn FnMut()| {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / iters as f64);
        }
        best
    };
    let copy = time(&mut || {
        frame.copy_from_slice(&base);
        std::hint::black_box(&mut frame);
    });
    for op in &ops {
        let t = time(&mut || {
            frame.copy_from_slice(&base);
            apply(std::slice::from_ref(op), &mut frame, w, h, &mut scratch);
        });
        println!(
            "{:<42} {:>9.0} ns/frame",
            format!("{op:?}"),
            (t - copy) * 1e9
        );
    }
    let ra = RandAugment::parse("rand-m7-n4-mstd0.5-inc1").unwrap();
    let n = 4000;
    let t = Instant::now();
    for _ in 0..n {
        let ops = ra.draw(&mut r);
        frame.copy_from_slice(&base);
        apply(&ops, &mut frame, w, h, &mut scratch);
    }
    let per = t.elapsed().as_secs_f64() / n as f64 - copy;
    println!(
        "rand-m7-n4-mstd0.5-inc1, one draw per frame: {:.0} ns/frame",
        per * 1e9
    );
}
