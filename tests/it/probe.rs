//! `pmv-data probe`: what the media layer sees in a file, as text and JSON; bad files
//! are reported by name with exit status 3, unreadable paths with 1.

use crate::shard_util::{Spec, make_video};
use crate::util::{Env, repo, s};

#[test]
fn probes_the_real_sample() {
    let env = Env::new();
    let v = repo().join("tests/data/xinpianchang/example/99945958.mp4");
    let out = env.run(&["--json", "probe", "--decode", s(&v)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = &out.json()["files"];
    let p = &doc[0]["probe"];
    assert_eq!(p["codec"], "h264");
    assert_eq!(p["width"], 640);
    assert_eq!(p["height"], 360);
    assert_eq!(p["frames"], 369);
    assert_eq!(p["declared_frames"], 369);
    assert_eq!(p["rotation"], 0);
    assert_eq!(p["sar"], "1:1");
    assert_eq!(p["vfr"], false);
    assert_eq!(p["profile"], "High");
    assert_eq!(doc[0]["decoded_frames"], 369);
    // Text for people.
    let out = env.run(&["probe", s(&v)]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("h264 (High) yuv420p 640x360"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("369 in 15.390 s"), "{}", out.stdout);
    // probe needs no data root and creates none.
    assert!(!env.root.exists());
}

#[test]
fn bad_files_are_named() {
    let env = Env::new();
    let good = make_video(&env.path(""), &Spec::h264("good.mp4", 96, 64, 1.0));
    let junk = env.write("junk.mp4", b"definitely not a video, just some text");
    let out = env.run(&["--json", "probe", s(&good), s(&junk)]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let doc = &out.json()["files"];
    assert_eq!(doc[0]["probe"]["width"], 96);
    assert_eq!(doc[1]["corrupt"], true);
    assert!(doc[1]["error"].as_str().unwrap().contains("junk.mp4"));
    let out = env.run(&["probe", s(&env.path("nowhere.mp4"))]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nowhere.mp4"), "{}", out.stderr);
}
