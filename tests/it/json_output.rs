//! `--json`: every command's document against its schema under `schemas/`, run reports
//! against theirs, and `--json` accepted wherever it is written.
//!
//! [`check`] is what `Out::json` runs on every document a test parses, so each test of
//! the suite that reads a command's JSON also checks its shape; [`SCHEMAS`] is the one
//! list of which schema each command's document follows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::util::{Env, repo, s};

/// The schema of each command's `--json` document (by its `command` key), and of the
/// error document any of them prints when it fails.
pub const SCHEMAS: &[(&str, &str)] = &[
    ("ingest", "output-ingest.schema.json"),
    ("status", "output-status.schema.json"),
    ("fetch", "output-fetch.schema.json"),
    ("resolve", "output-resolve.schema.json"),
    ("shard", "output-shard.schema.json"),
    ("probe", "output-probe.schema.json"),
    ("refresh", "output-refresh.schema.json"),
    ("demo", "output-demo.schema.json"),
    ("doctor", "output-doctor.schema.json"),
    ("train", "output-train.schema.json"),
    ("pretrain", "output-pretrain.schema.json"),
    ("eval", "output-eval.schema.json"),
];
const ERROR_SCHEMA: &str = "output-error.schema.json";
const RUN_REPORT_SCHEMA: &str = "run-report.schema.json";
const BASE: &str = "https://pmv-data.invalid/schemas/";

/// Every JSON Schema under `schemas/`, by file name.
fn schema_files() -> &'static HashMap<String, Value> {
    static FILES: OnceLock<HashMap<String, Value>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(repo().join("schemas")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.ends_with(".schema.json") {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(v["$id"], format!("{BASE}{name}"), "{name}: $id");
                files.insert(name, v);
            }
        }
        files
    })
}

fn validators() -> &'static HashMap<String, jsonschema::Validator> {
    static REGISTRY: OnceLock<jsonschema::Registry<'static>> = OnceLock::new();
    static VALIDATORS: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| {
        let mut builder = jsonschema::Registry::new();
        for (name, v) in schema_files() {
            builder = builder
                .add(
                    format!("{BASE}{name}"),
                    jsonschema::Resource::from_contents(v.clone()),
                )
                .unwrap();
        }
        builder.prepare().unwrap()
    });
    VALIDATORS.get_or_init(|| {
        schema_files()
            .iter()
            .map(|(name, v)| {
                let validator = jsonschema::options()
                    .with_registry(registry)
                    .build(v)
                    .unwrap_or_else(|e| panic!("schemas/{name} is not a valid schema: {e}"));
                (name.clone(), validator)
            })
            .collect()
    })
}

/// Validates `doc` against schema file `name`; panics naming every difference.
pub fn validate(name: &str, doc: &Value) {
    let v = validators()
        .get(name)
        .unwrap_or_else(|| panic!("no schemas/{name}"));
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "document does not match schemas/{name}:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(doc).unwrap()
    );
}

/// Checks a document a command printed with `--json` against the schema of that
/// command (its `command` key), or the error schema when it reports a failure.
/// Documents without a `command` (the trainer's `info`, `bench`, `synth`) have no
/// schema.
pub fn check(doc: &Value) {
    if doc.get("exit_code").is_some() {
        return validate(ERROR_SCHEMA, doc);
    }
    let Some(command) = doc.get("command").and_then(Value::as_str) else {
        return;
    };
    let schema = SCHEMAS
        .iter()
        .find(|(c, _)| *c == command)
        .unwrap_or_else(|| panic!("no schema is listed for `{command}` documents"))
        .1;
    validate(schema, doc);
}

/// Checks every run report under the root: the envelope, and the result of a run that
/// did not fail as the command's document (with the keys only the printed one has).
pub fn check_run_reports(root: &Path) -> usize {
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("reports")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        validate(RUN_REPORT_SCHEMA, &report);
        let mut doc = report["result"].clone();
        if doc.get("error").is_some() {
            continue;
        }
        doc["command"] = report["command"].clone();
        doc["run_id"] = report["run_id"].clone();
        doc["report"] = path.display().to_string().into();
        check(&doc);
        checked += 1;
    }
    checked
}

#[test]
fn every_listed_schema_exists_and_every_output_schema_is_listed() {
    let files = schema_files();
    for (command, name) in SCHEMAS {
        assert!(files.contains_key(*name), "{command}: no schemas/{name}");
    }
    for name in files.keys().filter(|n| n.starts_with("output-")) {
        assert!(
            *name == ERROR_SCHEMA || SCHEMAS.iter().any(|(_, n)| n == name),
            "schemas/{name} is listed for no command"
        );
    }
    // The schemas are strict: a key no command prints is refused.
    let doc = json!({ "command": "status", "root": "/r", "catalog": null,
                      "schema_version": null, "datasets": [], "runs": [] });
    validate("output-status.schema.json", &doc);
    let mut extra = doc.clone();
    extra["seconds"] = 1.into();
    assert!(!validators()["output-status.schema.json"].is_valid(&extra));
}

#[test]
fn json_is_accepted_wherever_it_is_written() {
    let env = Env::new();
    let f = env.write("items.jsonl", "{\"id\": \"a\", \"label\": \"x\"}\n");
    let ingest = ["ingest", "--dataset", "d", "--format", "jsonl", s(&f)];
    let mut cases: Vec<Vec<&str>> = vec![
        ingest.to_vec(),
        vec!["status"],
        vec!["status", "--dataset", "d"],
        vec!["resolve", "--offline", "https://example.com/v.mp4"],
        vec!["resolve", "--offline", "--dataset", "d"],
        vec!["doctor"],
    ];
    if cfg!(feature = "media") {
        cases.push(vec!["shard", "--list-recipes"]);
    }
    for case in &cases {
        let (first, rest) = case.split_first().unwrap();
        let before: Vec<&str> = [&["--json", *first][..], rest].concat();
        let after: Vec<&str> = [&[*first][..], rest, &["--json"]].concat();
        let mut docs = vec![];
        for args in [before, after] {
            let out = env.run(&args);
            assert!(
                out.code == 0 || (*first == "doctor" && out.code == 1),
                "{args:?}: exit {}\n{}",
                out.code,
                out.stderr
            );
            let mut doc = out.json();
            assert_eq!(doc["command"], *first, "{args:?}");
            for k in ["run_id", "report", "duration_s"] {
                doc.as_object_mut().unwrap().remove(k);
            }
            docs.push(doc);
        }
        if *first != "ingest" {
            assert_eq!(docs[0], docs[1], "{case:?}: the same document either way");
        }
    }
    // A failed command prints the error document wherever --json is written, and so
    // does a command line that does not parse.
    let mut failures: Vec<(Vec<&str>, i32, Option<&str>)> = vec![
        (
            vec!["--json", "status", "--dataset", "nope"],
            1,
            Some("status"),
        ),
        (
            vec!["status", "--dataset", "nope", "--json"],
            1,
            Some("status"),
        ),
        (
            vec!["--json", "ingest", "--dataset", "d", s(&f)],
            2,
            Some("ingest"),
        ),
        (
            vec!["ingest", "--format", "nope", "--json"],
            2,
            Some("ingest"),
        ),
        (vec!["--json", "frobnicate"], 2, None),
    ];
    if cfg!(feature = "train") {
        // The trainer parses these; its documents have the same shape.
        failures.push((
            vec!["--json", "train", "--no-such-option"],
            2,
            Some("train"),
        ));
        failures.push((vec!["eval", "--run", "nowhere", "--json"], 1, Some("eval")));
    }
    for (args, code, command) in failures {
        let out = env.run(&args);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        let doc = out.json();
        assert_eq!(doc["command"].as_str(), command, "{args:?}");
        assert_eq!(doc["exit_code"], code, "{args:?}");
        assert!(!doc["error"].as_str().unwrap().is_empty(), "{args:?}");
    }
    assert!(check_run_reports(&env.root) >= 2);
}

/// The data half of the pipeline on two tiny generated videos, each command with
/// `--json`: every document and every run report matches its schema.
#[cfg(feature = "media")]
#[test]
fn each_command_of_the_pipeline_prints_what_its_schema_says() {
    use crate::shard_util::{Spec, make_video};

    let env = Env::new();
    let videos = env.path("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let mut items = String::new();
    for (i, label) in ["walk", "run"].iter().enumerate() {
        let v = make_video(&videos, &Spec::h264(&format!("v{i}.mp4"), 64, 48, 0.5));
        items.push_str(&format!(
            "{}\n",
            json!({ "id": format!("v{i}"), "label": label, "split": "train", "urls": [v] })
        ));
    }
    let manifest = env.write("items.jsonl", items);
    let run = |args: &[&str]| {
        let out = env.run(args);
        let doc = out.json();
        // The key `check` picks the schema by: a document without it is not checked.
        let command = args
            .iter()
            .skip_while(|a| a.starts_with('-') || a.ends_with(".toml"));
        assert_eq!(doc["command"].as_str(), command.copied().next(), "{args:?}");
        (out.code, doc)
    };
    let (code, doc) = run(&[
        "--json",
        "ingest",
        "--dataset",
        "d",
        "--format",
        "jsonl",
        s(&manifest),
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["items"]["new"], 2);
    let (code, doc) = run(&["--json", "fetch"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["imported"], 2, "{doc}");
    assert_eq!(doc["datasets"][0]["states"]["verified"], 2, "{doc}");
    let recipe = [
        "--frames", "2", "--stride", "2", "--clips", "1", "--size", "32x32",
    ];
    let (code, doc) = run(&[&["--json", "shard", "--dataset", "d"][..], &recipe].concat());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["samples"], 2, "{doc}");
    let shard_id = doc["shards"][0]["id"].as_i64().unwrap().to_string();
    let (code, doc) = run(&["--json", "shard", "--rebuild", &shard_id]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["identical"], true, "{doc}");
    let (code, doc) = run(&["--json", "probe", s(&videos.join("v0.mp4"))]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["files"][0]["probe"]["width"], 64, "{doc}");
    let (code, doc) = run(&["--json", "resolve", s(&videos.join("v1.mp4"))]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["links"][0]["kind"], "local", "{doc}");
    let (code, doc) = run(&["--json", "status"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["datasets"][0]["shards"][0]["samples"], 2, "{doc}");
    let config = env.write(
        "pmv.toml",
        format!(
            "[[datasets]]\nname = \"d\"\nformat = \"jsonl\"\nmanifests = [\"{}\"]\n\
             recipes = [{{ frames = 2, stride = 2, clips = 1, size = \"32x32\" }}]\n",
            s(&manifest)
        ),
    );
    let (code, doc) = run(&["--config", s(&config), "--json", "refresh"]);
    assert_eq!(code, 0, "{doc}");
    let states = doc["datasets"][0]["states"].as_object().unwrap();
    assert_eq!(
        states.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        2,
        "{doc}"
    );
    // ingest, fetch, shard, the rebuild and the refresh each left a report.
    assert_eq!(check_run_reports(&env.root), 5);
}
