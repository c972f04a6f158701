//! `pmv-data completions SHELL`: a completion script that knows every subcommand and
//! every option, those of `train`, `pretrain` and `eval` included.
//!
//! Those three hand their arguments to `pmv-data-train`, so `pmv-data` itself parses
//! them as one opaque list; for completion the list is replaced by the trainer's own
//! option definitions (`src/train/cli.rs`, which needs no libtorch). clap_complete
//! writes the script. Its bash script for a binary whose name has a hyphen never
//! completes anything after a subcommand: the word loop spells the state of
//! `pmv-data ingest` as `pmv__data__subcmd__ingest` while the case arms spell it
//! `pmv__subcmd__data__subcmd__ingest`, so no arm matches. [`fix_bash`] rewrites the
//! arms to the loop's spelling and leaves a script that is already right unchanged.
//! Prints the script and nothing else; reads and writes no file.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use pmv_term::exit::Exit;
use pmv_term::output::outln;
use pmv_train_cli::{EvalArgs, PretrainArgs, TrainArgs};

/// The name the scripts complete.
const BIN: &str = "pmv-data";

/// What bash's generator puts between the names of a subcommand path.
const SEP: &str = "__subcmd__";

pub fn run(shell: Shell) -> Result<Exit> {
    let mut cmd = command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut script);
    let mut script = String::from_utf8(script)?;
    if shell == Shell::Bash {
        script = fix_bash(&script, &cmd);
    }
    outln!("{}", script.trim_end_matches('\n'));
    Ok(Exit::Ok)
}

/// `pmv-data`'s command line, with the trainer's options under `train`, `pretrain` and
/// `eval`.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("train", TrainArgs::augment_args)
        .mut_subcommand("pretrain", PretrainArgs::augment_args)
        .mut_subcommand("eval", EvalArgs::augment_args)
        .mut_subcommands(|sub| {
            if matches!(sub.get_name(), "train" | "pretrain" | "eval") {
                // The opaque list is what the options above stand for.
                sub.mut_arg("args", |a| a.hide(true))
                    .disable_help_flag(false)
            } else {
                sub
            }
        })
}

/// Renames the case arms of a clap_complete bash script to the states its word loop
/// computes (see the module documentation). `cmd` is the command the script was
/// generated from.
pub fn fix_bash(script: &str, cmd: &clap::Command) -> String {
    let mut renames: Vec<(String, String)> = vec![];
    let root = BIN.replace('-', "__");
    collect_states(cmd, &root, BIN, &mut renames);
    renames.retain(|(arm, state)| arm != state);
    if renames.is_empty() {
        return script.to_owned();
    }
    let mut out = String::with_capacity(script.len());
    for line in script.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let label = body.trim_start();
        let renamed = label.strip_suffix(')').and_then(|name| {
            renames
                .iter()
                .find(|(arm, _)| arm == name)
                .map(|(_, state)| state)
        });
        match renamed {
            Some(state) => {
                out.push_str(&body[..body.len() - label.len()]);
                out.push_str(state);
                out.push(')');
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// For each subcommand below `cmd`: how the generator labels its case arm, and the
/// state the word loop reaches for it. `state` and `path` are `cmd`'s.
fn collect_states(cmd: &clap::Command, state: &str, path: &str, out: &mut Vec<(String, String)>) {
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        let sub_state = format!("{state}{SEP}{}", name.replace('-', SEP));
        let sub_path = format!("{path} {name}");
        let arm = sub_path.replace([' ', '-'], SEP);
        out.push((arm, sub_state.clone()));
        collect_states(sub, &sub_state, &sub_path, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_arms_take_the_states_the_loop_computes() {
        let cmd = clap::Command::new(BIN)
            .subcommand(clap::Command::new("ingest"))
            .subcommand(clap::Command::new("bench-loader"));
        let script = "case \"${cmd}\" in\n        pmv__data)\n        \
                      pmv__subcmd__data__subcmd__ingest)\n        \
                      pmv__subcmd__data__subcmd__bench__subcmd__loader)\n";
        let fixed = fix_bash(script, &cmd);
        assert_eq!(
            fixed,
            "case \"${cmd}\" in\n        pmv__data)\n        \
             pmv__data__subcmd__ingest)\n        \
             pmv__data__subcmd__bench__subcmd__loader)\n"
        );
        // A script that is already right is left as it is.
        assert_eq!(fix_bash(&fixed, &cmd), fixed);
    }

    #[test]
    fn the_completion_command_is_valid_and_knows_the_trainer_options() {
        let cmd = command();
        cmd.clone().debug_assert();
        for (sub, long) in [
            ("train", "epochs"),
            ("pretrain", "mask-ratio"),
            ("eval", "views"),
        ] {
            let s = cmd.find_subcommand(sub).unwrap();
            assert!(
                s.get_arguments().any(|a| a.get_long() == Some(long)),
                "{sub} --{long}"
            );
        }
    }
}
