//! Recipe files: the hyper-parameters of an upstream training script as a TOML file
//! (`manifests/recipes/*.toml`), given to `train`, `pretrain` or `eval` with
//! `--recipe-file`.
//!
//! A recipe has a `[recipe]` table (`name`, `follows`: the upstream script it
//! reproduces, `notes`) and one table per command it configures (`[train]`,
//! `[pretrain]`, `[eval]`) whose keys are that command's long options (`batch-size = 8`,
//! `jitter-scales = [256, 320]`, `nesterov = true`). Owns reading and checking the file
//! and turning the command's table into options placed before the ones on the command
//! line, so that anything given there overrides the recipe. It never runs anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RecipeFileError {
    #[error("recipe {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recipe {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("--recipe-file needs a file name")]
    Missing,
}

/// Options a recipe may not set: where data and runs are, and the recipe itself.
const NOT_IN_RECIPES: &[&str] = &[
    "recipe-file",
    "root",
    "dataset",
    "shards",
    "val-shards",
    "classes",
    "out",
    "run",
    "resume",
    "init",
    "checkpoint",
    "json",
    "help",
];

/// A recipe file's TOML.
fn read(path: &Path) -> Result<toml::Table, RecipeFileError> {
    let text = fs_err::read_to_string(path).map_err(|source| RecipeFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| RecipeFileError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The options a recipe's table for `command` gives, as command-line arguments.
pub fn options(path: &Path, command: &str) -> Result<Vec<OsString>, RecipeFileError> {
    options_of(&read(path)?, path, command)
}

/// [`options`] of the recipe `doc` read from `path`.
fn options_of(
    doc: &toml::Table,
    path: &Path,
    command: &str,
) -> Result<Vec<OsString>, RecipeFileError> {
    let invalid = |message: String| RecipeFileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let known = ["recipe", "train", "pretrain", "eval"];
    if let Some(k) = doc.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown table [{k}] (a recipe has [recipe], [train], [pretrain] and [eval])"
        )));
    }
    match doc.get("recipe") {
        Some(toml::Value::Table(t)) => {
            for key in ["name", "follows"] {
                if !matches!(t.get(key), Some(toml::Value::String(s)) if !s.trim().is_empty()) {
                    return Err(invalid(format!("[recipe] needs a {key} string")));
                }
            }
        }
        _ => return Err(invalid("no [recipe] table with name and follows".into())),
    }
    let Some(toml::Value::Table(table)) = doc.get(command) else {
        let has: Vec<&str> = known[1..]
            .iter()
            .copied()
            .filter(|k| doc.contains_key(*k))
            .collect();
        return Err(invalid(format!(
            "no [{command}] table (it configures: {})",
            if has.is_empty() {
                "nothing".to_owned()
            } else {
                has.join(", ")
            }
        )));
    };
    let mut out = vec![];
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if NOT_IN_RECIPES.contains(&flag.as_str()) {
            return Err(invalid(format!(
                "[{command}] {key}: a recipe does not say where data or runs are; give --{flag} on the command line"
            )));
        }
        let text = match value {
            toml::Value::Boolean(true) => {
                out.push(OsString::from(format!("--{flag}")));
                continue;
            }
            toml::Value::Boolean(false) => continue,
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    toml::Value::Float(f) => Ok(f.to_string()),
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(invalid(format!("[{command}] {key}: {other} in a list"))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => {
                return Err(invalid(format!(
                    "[{command}] {key} = {other}: give a string, number, boolean or list"
                )));
            }
        };
        out.push(OsString::from(format!("--{flag}")));
        out.push(OsString::from(text));
    }
    Ok(out)
}

/// The frame recipe the recipe `doc` (read from `path`) names in `[recipe] shards`, if
/// it names one.
fn named_shards(doc: &toml::Table, path: &Path) -> Result<Option<String>, RecipeFileError> {
    match doc.get("recipe").and_then(|r| r.get("shards")) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(RecipeFileError::Invalid {
            path: path.to_owned(),
            message: format!("[recipe] shards = {other}: give a frame recipe's name or id"),
        }),
    }
}

/// `argv` with every `--recipe-file FILE` of the command (`argv[1..]` up to the first
/// subcommand name in `commands`) expanded: the recipe's options go right after the
/// subcommand, before the options given on the command line (which therefore win).
/// `--recipe-file` itself stays, so the run records it. A `train` or `pretrain` on a
/// catalog dataset (`--dataset`) given neither `--recipe` nor `--shards` reads the frame
/// recipe the file names (`[recipe] shards`).
pub fn expand(argv: Vec<OsString>, commands: &[&str]) -> Result<Vec<OsString>, RecipeFileError> {
    let Some(at) = argv
        .iter()
        .skip(1)
        .position(|a| commands.iter().any(|c| a == c))
        .map(|i| i + 1)
    else {
        return Ok(argv);
    };
    let command = argv[at].to_string_lossy().into_owned();
    let mut recipe: Option<PathBuf> = None;
    let mut i = at + 1;
    while i < argv.len() {
        let a = argv[i].to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--recipe-file" {
            recipe = Some(PathBuf::from(
                argv.get(i + 1).ok_or(RecipeFileError::Missing)?,
            ));
            i += 1;
        } else if let Some(v) = a.strip_prefix("--recipe-file=") {
            recipe = Some(PathBuf::from(v));
        }
        i += 1;
    }
    let Some(path) = recipe else {
        return Ok(argv);
    };
    let doc = read(&path)?;
    let mut extra = options_of(&doc, &path, &command)?;
    // The frame recipe the file names is the default `--recipe` of a catalog run.
    let given = |flag: &str| {
        argv[at + 1..].iter().any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        })
    };
    if ["train", "pretrain"].contains(&command.as_str())
        && given("--dataset")
        && !given("--recipe")
        && !given("--shards")
        && let Some(shards) = named_shards(&doc, &path)?
    {
        extra.push(OsString::from("--recipe"));
        extra.push(OsString::from(shards));
    }
    let mut out = argv[..=at].to_vec();
    out.extend(extra);
    out.extend(argv[at + 1..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_named_shards_are_the_default_recipe_of_a_catalog_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "[recipe]\nname = \"x\"\nfollows = \"y\"\nshards = \"pmv-16x5-s320-k10-jpeg\"\n\n[train]\nmodel = \"x3d-m\"\n\n[eval]\nviews = \"10x3\"\n",
        )
        .unwrap();
        let file = p.to_str().unwrap();
        let run = |args: &[&str]| -> Vec<String> {
            let mut argv = vec!["t"];
            argv.extend_from_slice(args);
            expand(os(&argv), &["train", "eval", "pretrain"])
                .unwrap()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let recipe_of = |argv: &[String]| -> Vec<String> {
            argv.windows(2)
                .filter(|w| w[0] == "--recipe")
                .map(|w| w[1].clone())
                .collect()
        };
        let got = run(&["train", "--dataset", "d", "--recipe-file", file]);
        assert_eq!(recipe_of(&got), ["pmv-16x5-s320-k10-jpeg"], "{got:?}");
        let got = run(&[
            "train",
            "--recipe-file",
            file,
            "--dataset=d",
            "--recipe",
            "other",
        ]);
        assert_eq!(recipe_of(&got), ["other"], "{got:?}");
        let got = run(&["train", "--recipe-file", file, "--shards", "dir"]);
        assert!(recipe_of(&got).is_empty(), "{got:?}");
        let got = run(&["eval", "--run", "r", "--recipe-file", file]);
        assert!(recipe_of(&got).is_empty(), "{got:?}");
        std::fs::write(
            &p,
            "[recipe]\nname = \"x\"\nfollows = \"y\"\nshards = 3\n[train]\n",
        )
        .unwrap();
        let e = expand(
            os(&["t", "train", "--dataset", "d", "--recipe-file", file]),
            &["train"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[recipe] shards = 3"), "{e}");
    }

    #[test]
    fn recipes_expand_before_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "[recipe]\nname = \"x\"\nfollows = \"upstream/train.sh\"\n\n[train]\nmodel = \"x3d-m\"\nbatch-size = 8\nlr = 0.05\njitter_scales = [256, 320]\nnesterov = true\nmulti-label = false\n\n[eval]\nviews = \"10x3\"\n",
        )
        .unwrap();
        let argv = os(&[
            "t",
            "--json",
            "train",
            "--recipe-file",
            p.to_str().unwrap(),
            "--lr",
            "0.1",
        ]);
        let out = expand(argv, &["train", "eval", "pretrain"]).unwrap();
        let text: Vec<String> = out
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let lr_recipe = text.iter().position(|a| a == "0.05").unwrap();
        let lr_user = text.iter().position(|a| a == "0.1").unwrap();
        assert!(lr_recipe < lr_user, "{text:?}");
        assert!(text.contains(&"--jitter-scales".to_owned()));
        assert!(text.contains(&"256,320".to_owned()));
        assert!(text.contains(&"--nesterov".to_owned()));
        assert!(!text.contains(&"--multi-label".to_owned()));
        let e = expand(
            os(&["t", "pretrain", "--recipe-file", p.to_str().unwrap()]),
            &["train", "pretrain"],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no [pretrain] table (it configures: train, eval)"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[recipe]\nname = \"x\"\nfollows = \"y\"\n[train]\nout = \"runs/x\"\n",
        )
        .unwrap();
        let e = options(&p, "train").unwrap_err().to_string();
        assert!(e.contains("--out on the command line"), "{e}");
        std::fs::write(&p, "[train]\nmodel = \"x\"\n").unwrap();
        assert!(options(&p, "train").is_err());
        // Without --recipe-file nothing changes.
        let argv = os(&["t", "train", "--lr", "1"]);
        assert_eq!(expand(argv.clone(), &["train"]).unwrap(), argv);
    }
}
