//! `pmv-data demo`, small: the whole pipeline (render, serve, ingest, fetch, shard,
//! train, eval) must learn the motion classes well above chance, and a second demo in
//! the same root must render, download and shard nothing again.

use crate::util::Env;

#[test]
fn a_small_demo_learns_motion_and_a_second_does_no_data_work() {
    let env = Env::new();
    // The four hardest classes: one shape, told apart only by direction and rotation
    // sense. The demo fetches from its own server on loopback without being told to
    // allow private hosts.
    let mut cmd = env.command();
    cmd.env_remove("PMV_FETCH_ALLOW_PRIVATE_HOSTS").args([
        "--json",
        "demo",
        "--classes",
        "4",
        "--videos-per-class",
        "24",
        "--epochs",
        "12",
    ]);
    let out = crate::util::Out::of(cmd);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let j = out.json();
    assert_eq!(j["train_videos"], 72, "{j}");
    assert_eq!(j["val_videos"], 24, "{j}");
    assert_eq!(j["fetch"]["verified"], 96, "downloaded over HTTP: {j}");
    assert_eq!(j["shard_samples"], 96, "{j}");
    let top1 = j["top1"].as_f64().unwrap();
    let chance = j["chance"].as_f64().unwrap();
    assert!(
        top1 >= 2.0 * chance,
        "top-1 {top1} is not well above chance {chance}: {j}"
    );
    let report = j["eval_json"].as_str().unwrap();
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(eval["counts"]["samples"], 24);
    for p in j["plots"].as_array().unwrap() {
        let png = std::fs::read(p.as_str().unwrap()).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
    // Every held-out video is one the model never trained on.
    let overlap: i64 = env.query(
        "SELECT count(*) FROM memberships a JOIN memberships b ON a.item_id = b.item_id \
         WHERE a.split = 'train' AND b.split = 'val'",
    );
    assert_eq!(overlap, 0);

    let out = env.run(&[
        "--json",
        "demo",
        "--classes",
        "4",
        "--videos-per-class",
        "24",
        "--epochs",
        "1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = out.json();
    assert_eq!(j["fetch"]["verified"], 0, "nothing downloaded again: {j}");
    assert_eq!(j["shard_samples"], 0, "nothing sharded again: {j}");

    // Settings that would change the videos are refused in this root.
    let out = env.run(&[
        "demo",
        "--classes",
        "4",
        "--videos-per-class",
        "24",
        "--seed",
        "7",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("other settings"), "{}", out.stderr);
}
