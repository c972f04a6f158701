//! `pmv-data train`: runs `pmv-data-train train` (the binary that links libtorch) with
//! the same arguments, the data root this command resolved, and the output mode; its
//! stdout, stderr and exit status pass through unchanged.

use anyhow::Result;

use super::App;
use crate::cli::PassArgs;
use pmv_term::exit::Exit;

pub fn run(app: &App, args: PassArgs) -> Result<Exit> {
    crate::trainer::run(app, "train", &args.args)
}
