//! The room shards keep for a training recipe, proved by what a model can learn through
//! the real commands (render, ingest, fetch, shard, train, eval): a class shown only
//! outside the centre square of portrait videos needs the long side stored, crops over
//! the whole frame in training and crops along the long side in testing; a class shown
//! only in the first or the last second needs clips that reach the video's ends, a
//! random one per epoch, and every clip tested. Each test sets a room recipe against a
//! centre recipe with the same model, budget and views.
//!
//! Accuracies are asserted with margins far from chance in both directions, never as
//! exact values; the videos and every random draw of training are seeded. No sample is
//! written here: every frame the model sees comes from the shard stage.

use pmv_pipeline::media::encode::{EncodeOptions, Mp4Writer};
use serde_json::json;

use crate::util::{Env, TestRng, s};

/// Shard flags every recipe here adds: how frames are stored (JPEG, as the built-in
/// recipes with room store them; the loader decodes them).
const CODEC: &[&str] = &["--codec", "jpeg"];

/// The class colours (RGB): red, green, blue, yellow. Everything else is grey.
const COLOURS: [[u8; 3]; 4] = [[230, 30, 30], [30, 210, 40], [40, 60, 240], [235, 215, 20]];

/// Rendered videos per class in each split.
const SPLITS: [(&str, usize); 2] = [("train", 16), ("val", 12)];

/// Grey noise, new in every frame and the same in distribution for every class.
fn noise(rng: &mut TestRng, w: usize, h: usize) -> Vec<u8> {
    let mut f = vec![0u8; w * h * 3];
    for px in f.chunks_exact_mut(3) {
        px.fill(64 + rng.below(128) as u8);
    }
    f
}

/// Renders every video of a data set (`render(rng, class)` gives its RGB frames)
/// beside a JSON lines manifest, ingests it as `dataset` and fetches the files.
fn dataset(
    env: &Env,
    dataset: &str,
    (w, h): (usize, usize),
    fps: u32,
    render: impl Fn(&mut TestRng, usize) -> Vec<Vec<u8>>,
) {
    let dir = env.path(&format!("{dataset}-source"));
    std::fs::create_dir_all(dir.join("clips")).unwrap();
    let options = EncodeOptions {
        fps,
        gop: fps,
        // Lossless: no colour of the class leaks into the rest of the frame.
        crf: 0,
        preset: "ultrafast".into(),
    };
    let mut rng = TestRng::new(dataset.len() as u64 * 1_000_003 + 17);
    let mut manifest = String::new();
    for (split, per_class) in SPLITS {
        for n in 0..per_class {
            for class in 0..COLOURS.len() {
                let id = format!("{split}-{class}-{n:02}");
                let file = format!("clips/{id}.mp4");
                let mut out = Mp4Writer::create(&dir.join(&file), w as u32, h as u32, &options)
                    .unwrap_or_else(|e| panic!("{e}"));
                for frame in render(&mut rng, class) {
                    assert_eq!(frame.len(), w * h * 3);
                    out.push_rgb(&frame).unwrap_or_else(|e| panic!("{e}"));
                }
                out.finish().unwrap_or_else(|e| panic!("{e}"));
                let row = json!({"id": id, "label": class, "split": split, "urls": [file]});
                manifest.push_str(&format!("{row}\n"));
            }
        }
    }
    let classes = env.write(
        &format!("{dataset}-source/classes.txt"),
        "red\ngreen\nblue\nyellow\n",
    );
    let list = env.write(&format!("{dataset}-source/items.jsonl"), manifest);
    let r = env.ingest(&[
        "--dataset",
        dataset,
        "--format",
        "jsonl",
        "--classes",
        s(&classes),
        s(&list),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = env.run(&["--json", "--quiet", "fetch"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let videos: usize = SPLITS.iter().map(|(_, n)| n * COLOURS.len()).sum();
    assert_eq!(r.json()["verified"], videos, "{}", r.stdout);
}

/// Shards `dataset` with the recipe flags (and [`CODEC`]); returns the recipe's id.
fn shard(env: &Env, dataset: &str, recipe: &[&str]) -> String {
    let mut args = vec!["--json", "--quiet", "shard", "--dataset", dataset];
    args.extend_from_slice(recipe);
    args.extend_from_slice(CODEC);
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let videos: usize = SPLITS.iter().map(|(_, n)| n * COLOURS.len()).sum();
    assert_eq!(v["samples"], videos, "{v}");
    v["recipe_id"].as_str().unwrap().to_owned()
}

/// Trains tiny3d on the recipe's training split with `options`; returns the run.
fn train(
    env: &Env,
    dataset: &str,
    recipe: &str,
    run: &'static str,
    options: &[&str],
) -> &'static str {
    let mut args = vec![
        "--json",
        "--quiet",
        "train",
        "--dataset",
        dataset,
        "--recipe",
        recipe,
        "--model",
        "tiny3d",
        "--width",
        "8",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--val-split",
        "none",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        run,
    ];
    args.extend_from_slice(options);
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bad_samples"], 0);
    run
}

/// The top-1 accuracy of `run` on the validation split with `views` (`CLIPSxCROPS`).
fn test(env: &Env, run: &str, views: &str) -> f64 {
    let r = env.run(&[
        "--json",
        "--quiet",
        "eval",
        "--run",
        run,
        "--views",
        views,
        "--device",
        "cpu",
        "--threads",
        "1",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["views"], views, "{v}");
    assert_eq!(v["samples"], SPLITS[1].1 * COLOURS.len(), "{v}");
    v["top1"].as_f64().unwrap()
}

/// Portrait videos 72x128 (W×H, 9:16): the class is the colour of a square moving
/// sideways in the top or the bottom fifth of the frame, at random; the rest is noise.
/// The centre square (rows 28..100) never shows it.
fn portrait(rng: &mut TestRng, class: usize) -> Vec<Vec<u8>> {
    let (w, h, side) = (72usize, 128usize, 14usize);
    let y = if rng.coin() {
        2 + rng.below(7)
    } else {
        h - 2 - side - rng.below(7)
    };
    let mut x = rng.below(w - side) as i64;
    let mut dx: i64 = if rng.coin() { 3 } else { -3 };
    (0..8)
        .map(|_| {
            let mut f = noise(rng, w, h);
            for row in y..y + side {
                for col in x as usize..x as usize + side {
                    f[(row * w + col) * 3..][..3].copy_from_slice(&COLOURS[class]);
                }
            }
            if x + dx < 0 || x + dx > (w - side) as i64 {
                dx = -dx;
            }
            x += dx;
            f
        })
        .collect()
}

#[test]
fn a_class_outside_the_centre_square_needs_the_long_side() {
    let env = Env::new();
    dataset(&env, "tall", (72, 128), 8, portrait);
    // 4 frames 2 apart, 2 clips, at 8 fps; the short side at half size. Room: the
    // whole 9:16 frame (64x36); centre: its centre square (36x36).
    let clip = [
        "--frames", "4", "--stride", "2", "--clips", "2", "--fps", "8",
    ];
    let room = shard(
        &env,
        "tall",
        &[&clip[..], &["--size", "64x36", "--short-side", "36"]].concat(),
    );
    let centre = shard(
        &env,
        "tall",
        &[&clip[..], &["--size", "36x36", "--short-side", "36"]].concat(),
    );
    // Training: short side jittered to 32..36, a 32x32 crop anywhere; testing: short
    // side 32, 2 clips x 3 crops (top, middle, bottom of the long side).
    let options = [
        "--epochs",
        "40",
        "--input",
        "32x32",
        "--jitter-scales",
        "32,36",
        "--test-scale",
        "32",
    ];
    let room = train(&env, "tall", &room, "runs/room", &options);
    let centre = train(&env, "tall", &centre, "runs/centre", &options);
    let room_top1 = test(&env, room, "2x3");
    let centre_top1 = test(&env, centre, "2x3");
    // The room run tested on the centre crop only: the crops along the long side are
    // what find the class.
    let room_centre_crop = test(&env, room, "2x1");
    eprintln!(
        "portrait colour: room top-1 {room_top1} (2x3), {room_centre_crop} (2x1); \
         centre top-1 {centre_top1}"
    );
    // Four classes: chance is 0.25.
    assert!(
        room_top1 >= 0.85,
        "stored with room, top-1 {room_top1} (centre {centre_top1})"
    );
    assert!(
        centre_top1 <= 0.5,
        "the centre square alone cannot tell the classes, yet top-1 {centre_top1}"
    );
    assert!(
        room_centre_crop <= 0.5,
        "the centre crop alone cannot tell the classes, yet top-1 {room_centre_crop}"
    );
}

/// Square videos of 3 s at 10 fps: the class is the colour of a 4-frame flash in the
/// first or the last second, at random; the rest is noise.
fn flash(rng: &mut TestRng, class: usize) -> Vec<Vec<u8>> {
    let (side, frames) = (32usize, 30usize);
    let start = if rng.coin() {
        rng.below(7)
    } else {
        20 + rng.below(7)
    };
    (0..frames)
        .map(|i| {
            let mut f = noise(rng, side, side);
            if (start..start + 4).contains(&i) {
                for px in f.chunks_exact_mut(3) {
                    for (v, c) in px.iter_mut().zip(COLOURS[class]) {
                        *v = ((*v as u16 + 3 * c as u16) / 4) as u8;
                    }
                }
            }
            f
        })
        .collect()
}

#[test]
fn a_class_at_the_ends_of_a_video_needs_clips_that_reach_them() {
    let env = Env::new();
    dataset(&env, "ends", (32, 32), 10, flash);
    // 4 frames 2 apart (a 7-frame window) on a 30-frame timeline: 5 clips start at 0,
    // 6, 12, 17 and 23, so the first and the last reach the ends; one clip is centred
    // (frames 11..17) and never sees a flash.
    let clip = [
        "--frames", "4", "--stride", "2", "--size", "32x32", "--fps", "10",
    ];
    let room = shard(&env, "ends", &[&clip[..], &["--clips", "5"]].concat());
    let centre = shard(&env, "ends", &[&clip[..], &["--clips", "1"]].concat());
    let options = ["--epochs", "20", "--crop-scale", "0.5,1"];
    let room = train(&env, "ends", &room, "runs/room", &options);
    let centre = train(&env, "ends", &centre, "runs/centre", &options);
    let room_top1 = test(&env, room, "5x1");
    let centre_top1 = test(&env, centre, "1x1");
    // The 5-clip run tested on its centre clip only: the clips at the ends are what
    // find the class.
    let room_centre_clip = test(&env, room, "1x1");
    eprintln!(
        "flash at the ends: 5 clips top-1 {room_top1} (5x1), {room_centre_clip} (1x1); \
         centre clip top-1 {centre_top1}"
    );
    assert!(
        room_top1 >= 0.85,
        "5 clips, top-1 {room_top1} (one clip {centre_top1})"
    );
    assert!(
        centre_top1 <= 0.5,
        "the centre clip alone cannot tell the classes, yet top-1 {centre_top1}"
    );
    assert!(
        room_centre_clip <= 0.5,
        "the middle stored clip alone cannot tell the classes, yet top-1 {room_centre_clip}"
    );
}
