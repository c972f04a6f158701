//! The command line (clap derive): global options and one struct per subcommand.
//!
//! Only parsing lives here; what each command does is in `commands/`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use pmv_data::manifest::Format;
use pmv_data::shard::recipe::{Filter, Fit};

#[derive(Debug, Parser)]
#[command(
    name = "pmv-data",
    version,
    about = "Turns link lists of short videos into verified downloads, frame shards and trained classifiers",
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 input rejected, 75 data root busy.\n\
                  See README.md for the whole workflow."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data root holding the catalog, videos, shards and run reports
    /// [default: ./pmv-data-root]
    #[arg(long, global = true, env = "PMV_DATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Configuration file (TOML); command-line flags override it
    #[arg(long, global = true, env = "PMV_DATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read manifests into the catalog; only what changed is written
    Ingest(IngestArgs),
    /// Show datasets: items, classes, splits, file states, bytes, recent runs
    Status(StatusArgs),
    /// Decode verified videos into frame shards of a recipe; only what is new is done
    Shard(ShardArgs),
    /// Print what the media layer sees in video files
    Probe(ProbeArgs),
    /// Check this machine: data root, catalog, FFmpeg, libtorch
    Doctor,
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Dataset to ingest into (created on first use)
    #[arg(long, value_name = "NAME")]
    pub dataset: String,

    /// Manifest format
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Format,

    /// Split of rows that do not name one [default: from the file name for pmv400 and
    /// videomae lists, else a stable hash of the id]
    #[arg(long, value_name = "S")]
    pub split: Option<String>,

    /// Class list: `name,id` or `id,name` CSV, one name per line (.txt) or JSON
    /// [default: built in for pmv400 and xinpianchang]
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,

    /// Links file whose first column is each item's URL, ending in `=<id>` (PMV-400's
    /// video_links.csv)
    #[arg(long, value_name = "FILE")]
    pub links: Option<PathBuf>,

    /// URL with `{id}` for each item's source, tried after the manifest's own
    #[arg(long, value_name = "T")]
    pub url_template: Option<String>,

    /// Hash-split ratios for rows without a split [default: train=0.9,val=0.1]
    #[arg(long, value_name = "R")]
    pub split_ratios: Option<String>,

    /// Items may have several labels (default for xinpianchang)
    #[arg(long, conflicts_with = "single_label")]
    pub multi_label: bool,

    /// Items have one label (default except for xinpianchang)
    #[arg(long)]
    pub single_label: bool,

    /// Directory that relative local paths in the manifests start from
    /// [default: each manifest's directory]
    #[arg(long, value_name = "DIR")]
    pub base_dir: Option<PathBuf>,

    /// Any rejected row rejects the whole ingest: nothing is written
    #[arg(long)]
    pub strict: bool,

    /// Read manifests even if they are unchanged since their last ingest
    #[arg(long)]
    pub force: bool,

    /// Manifests: files, or for xinpianchang also directories of <label>/<id>/<id>.txt
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this dataset
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShardArgs {
    /// Dataset to shard
    #[arg(long, value_name = "NAME", required_unless_present_any = ["list_recipes", "rebuild"])]
    pub dataset: Option<String>,

    /// Only this split (repeatable) [default: every split]
    #[arg(long, value_name = "S")]
    pub split: Vec<String>,

    /// A built-in recipe (see --list-recipes); the flags below change it
    #[arg(long, value_name = "NAME")]
    pub recipe: Option<String>,

    /// Frames per clip (T)
    #[arg(long, value_name = "T")]
    pub frames: Option<u32>,

    /// Frames between samples on the normalised timeline
    #[arg(long, value_name = "S", conflicts_with = "segments")]
    pub stride: Option<u32>,

    /// TSN sampling: T equal segments, one frame from each
    #[arg(long)]
    pub segments: bool,

    /// Clips per video (K), evenly spread; one clip is centred
    #[arg(long, value_name = "K")]
    pub clips: Option<u32>,

    /// Output height and width, e.g. 224x224 or 288x192 (H×W)
    #[arg(long, value_name = "HxW")]
    pub size: Option<String>,

    /// How the picture fills H×W [default: short-side]
    #[arg(long, value_enum, value_name = "FIT")]
    pub fit: Option<Fit>,

    /// short-side fit: the length the short side is scaled to [default: min(H, W)]
    #[arg(long, value_name = "N")]
    pub short_side: Option<u32>,

    /// Frame rate of the timeline the stride counts on [default: 30]
    #[arg(long, value_name = "F")]
    pub fps: Option<f64>,

    /// Scaling filter [default: bicubic]
    #[arg(long, value_enum, value_name = "FILTER")]
    pub filter: Option<Filter>,

    /// Samples per shard [default: as many as fit in 512 MiB]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub samples_per_shard: Option<u32>,

    /// Videos decoded at once [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// Shard at most N videos in this run
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Stop starting videos after this long (e.g. 45m, 6h); open shards are closed
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_time: Option<std::time::Duration>,

    /// Print the built-in recipes and exit
    #[arg(long, exclusive = true)]
    pub list_recipes: bool,

    /// Write the shard with this catalog id again from its videos, under a new name
    #[arg(long, value_name = "SHARD_ID", exclusive = true)]
    pub rebuild: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Also decode every frame (a full check; slower)
    #[arg(long)]
    pub decode: bool,

    /// Video files
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}
