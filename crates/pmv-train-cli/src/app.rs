//! The whole command line of `pmv-data-train`: global flags and one subcommand.
//!
//! Owns the parser the trainer runs (`Cli`), so that a test can check every shipped
//! recipe file against it without linking libtorch. What each command does is
//! `pmv_train`'s.

use clap::{ArgAction, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pmv-data-train",
    version,
    about = "pmv-data's libtorch half: train and evaluate video classifiers on frame shards",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 some samples could not be read \
                  (left out and reported), 75 the run is in use."
)]
pub struct Cli {
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Which libtorch this binary runs on and what it reaches (CUDA, cuDNN, threads)
    Info,
    /// Train a model on a dataset's shards (or a shard directory)
    #[command(args_override_self = true)]
    Train(Box<crate::TrainArgs>),
    /// VideoMAE masked pre-training of a ViT encoder on a dataset's shards (labels
    /// unused); the result fine-tunes with `train --init`
    #[command(args_override_self = true)]
    Pretrain(Box<crate::PretrainArgs>),
    /// Evaluate a run: views per video, top-1/top-5, per-class accuracy, reports
    #[command(args_override_self = true)]
    Eval(crate::EvalArgs),
    /// Time training steps of a model (synthetic batch on the device, or --shards)
    Bench(crate::BenchArgs),
    /// Time the shard loader alone
    BenchLoader(crate::BenchLoaderArgs),
    /// Write a synthetic dataset of moving shapes as shards (no FFmpeg needed)
    Synth(crate::SynthArgs),
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Info => "info",
            Command::Train(_) => "train",
            Command::Pretrain(_) => "pretrain",
            Command::Eval(_) => "eval",
            Command::Bench(_) => "bench",
            Command::BenchLoader(_) => "bench-loader",
            Command::Synth(_) => "synth",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::PathBuf;

    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// Every shipped recipe parses as the options of the commands it configures.
    #[test]
    fn shipped_recipes_are_valid_options() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("manifests/recipes");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 9, "{files:?}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let doc: toml::Table = toml::from_str(&text).unwrap();
            let mut configured = 0;
            for (command, base) in [
                ("train", vec!["--shards", "x"]),
                ("pretrain", vec!["--shards", "x"]),
                ("eval", vec!["--run", "x"]),
            ] {
                if !doc.contains_key(command) {
                    continue;
                }
                configured += 1;
                let mut argv = os(&[
                    "pmv-data-train",
                    command,
                    "--recipe-file",
                    f.to_str().unwrap(),
                ]);
                argv.extend(os(&base));
                let argv =
                    crate::recipe_file::expand(argv, &["train", "pretrain", "eval"]).unwrap();
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!("{}: [{command}]: {e}", f.display());
                }
            }
            assert!(configured > 0, "{}", f.display());
        }
    }

    /// The augmentation and moving-average options, from a recipe and the command line.
    #[test]
    fn augmentation_and_ema_options_parse_from_recipes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "[recipe]\nname = \"x\"\nfollows = \"y\"\n[train]\nmodel = \"vit-s\"\n\
             repeated-aug = 2\nrandom-erase = 0.25\nerase-mode = \"rand\"\nerase-count = 3\n\
             auto-augment = \"rand-m7-n4-mstd0.5-inc1\"\nmodel-ema = true\n\
             model-ema-decay = 0.999\n",
        )
        .unwrap();
        let argv = os(&[
            "t",
            "train",
            "--recipe-file",
            p.to_str().unwrap(),
            "--shards",
            "x",
        ]);
        let argv = crate::recipe_file::expand(argv, &["train"]).unwrap();
        let Command::Train(a) = Cli::try_parse_from(&argv).unwrap().command else {
            panic!("not train");
        };
        assert_eq!(
            (a.repeated_aug, a.random_erase, a.erase_count),
            (2, 0.25, 3)
        );
        assert_eq!(a.erase_mode, crate::EraseMode::Rand);
        assert_eq!(a.auto_augment.as_deref(), Some("rand-m7-n4-mstd0.5-inc1"));
        assert!(a.model_ema && a.model_ema_decay == 0.999);
        // The defaults: one view, no erasing (pixel fill when on), no average.
        let d =
            Cli::try_parse_from(os(&["t", "train", "--model", "tiny3d", "--shards", "x"])).unwrap();
        let Command::Train(d) = d.command else {
            panic!("not train");
        };
        assert_eq!((d.repeated_aug, d.random_erase, d.erase_count), (1, 0.0, 1));
        assert_eq!(d.erase_mode, crate::EraseMode::Pixel);
        assert!(!d.model_ema && d.model_ema_decay == 0.9999 && d.auto_augment.is_none());
        for bad in [
            ["--repeated-aug", "0"],
            ["--random-erase", "1.5"],
            ["--erase-mode", "noise"],
            ["--erase-count", "0"],
        ] {
            let mut v = os(&["t", "train", "--model", "tiny3d", "--shards", "x"]);
            v.extend(os(&bad));
            assert!(Cli::try_parse_from(v).is_err(), "{bad:?}");
        }
        let e = os(&["t", "eval", "--run", "x", "--ema"]);
        let Command::Eval(e) = Cli::try_parse_from(e).unwrap().command else {
            panic!("not eval");
        };
        assert!(e.ema);
    }
}
