//! The command line (clap derive): global options and one struct per subcommand.
//!
//! Only parsing lives here; what each command does is in `commands/`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use pmv_core::frame_recipe::{CodecKind, Filter, Fit};
use pmv_pipeline::manifest::Format;

#[derive(Debug, Parser)]
#[command(
    name = "pmv-data",
    version,
    about = "Turns link lists of short videos into verified downloads, frame shards and trained classifiers",
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 input rejected or files failed, \
                  75 data root busy, 130 interrupted.\n\
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
    /// Download every file that is missing or due for retry; verify and record each
    Fetch(FetchArgs),
    /// Show how links resolve (source kind, canonical id, the URL to download),
    /// without downloading them
    Resolve(ResolveArgs),
    /// Decode verified videos into frame shards of a recipe; only what is new is done
    Shard(ShardArgs),
    /// Print what the media layer sees in video files
    Probe(ProbeArgs),
    /// Bring every dataset of the configuration up to date: ingest, verify, fetch,
    /// shard (what cron runs every night)
    Refresh(RefreshArgs),
    /// The whole pipeline on a built-in synthetic dataset: render, serve over HTTP,
    /// ingest, fetch, shard, train tiny3d, evaluate on held-out videos
    Demo(DemoArgs),
    /// Check this machine: data root, catalog, FFmpeg, libtorch
    Doctor,
    /// Train a video classifier on a dataset's shards (`pmv-data train --help` lists
    /// the options; runs pmv-data-train)
    #[command(disable_help_flag = true)]
    Train(PassArgs),
    /// VideoMAE masked pre-training of a ViT on a dataset's shards (`pmv-data pretrain
    /// --help` lists the options; runs pmv-data-train)
    #[command(disable_help_flag = true)]
    Pretrain(PassArgs),
    /// Evaluate a trained run: views, top-1/top-5, per-class accuracy, reports
    /// (`pmv-data eval --help` lists the options; runs pmv-data-train)
    #[command(disable_help_flag = true)]
    Eval(PassArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ingest(_) => "ingest",
            Command::Status(_) => "status",
            Command::Fetch(_) => "fetch",
            Command::Resolve(_) => "resolve",
            Command::Shard(_) => "shard",
            Command::Probe(_) => "probe",
            Command::Refresh(_) => "refresh",
            Command::Demo(_) => "demo",
            Command::Doctor => "doctor",
            Command::Train(_) => "train",
            Command::Pretrain(_) => "pretrain",
            Command::Eval(_) => "eval",
            Command::Completions { .. } => "completions",
        }
    }
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

/// Arguments handed unchanged to pmv-data-train.
#[derive(Debug, Args)]
pub struct PassArgs {
    /// Options of the command (see its --help)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "ARGS")]
    pub args: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this dataset
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Only this dataset [default: every dataset]
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,

    /// Only items in this split
    #[arg(long, value_name = "S")]
    pub split: Option<String>,

    /// At most this many items (each with its video and cover)
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Files downloaded at once [config fetch.concurrency, default 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: Option<u64>,

    /// Files downloaded at once from one host [config fetch.per_host, default 8]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub per_host: Option<u64>,

    /// Requests per second to one host, 0 for no limit [config fetch.rate, default 0]
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,

    /// Retry files that failed transiently now, not only those whose retry time came
    #[arg(long)]
    pub retry_failed: bool,

    /// Also retry files that failed permanently (404, removed items), from their
    /// first source
    #[arg(long)]
    pub include_permanent: bool,

    /// Seconds without any byte before an attempt fails [config fetch.timeout,
    /// default 30]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Largest file accepted, e.g. 4GiB [config fetch.max_size, default 4 GiB]
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,

    /// Folder of files already downloaded (`<id>.mp4`, `<id>.jpg`, a few levels
    /// deep; `<id>` the item id, or the Douyin id of its Douyin link, as yt-dlp names
    /// files), imported by hard link or copy before any remote source; repeatable
    #[arg(long, value_name = "DIR")]
    pub import_dir: Vec<PathBuf>,

    /// Slowest average throughput accepted over --min-speed-time, in bytes per second
    /// (e.g. 1KiB); a slower transfer fails as too_slow and is retried later; 0: no
    /// minimum [config fetch.min_speed, default 1 KiB]
    #[arg(long, value_name = "SIZE")]
    pub min_speed: Option<String>,

    /// Seconds over which --min-speed is averaged [config fetch.min_speed_time,
    /// default 30]
    #[arg(long, value_name = "SECS")]
    pub min_speed_time: Option<f64>,

    /// Free space every download must leave on the disk of the data root, e.g. 2GiB
    /// [config fetch.min_free, default 1 GiB or 5% of the disk, whichever is smaller]
    #[arg(long, value_name = "SIZE")]
    pub min_free: Option<String>,

    /// Fetch from hosts on this machine or a private network that a link names
    /// (link-local and cloud metadata addresses never) [config
    /// fetch.allow_private_hosts]
    #[arg(long)]
    pub allow_private_hosts: bool,

    /// Stop after this long (e.g. 2h, 30m): downloads in flight stop and keep their
    /// partial files for the next run, and the run ends cleanly
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<humantime::Duration>,

    /// Stop once this much was received (e.g. 200GiB): downloads in flight stop and
    /// keep their partial files, and the run ends cleanly
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<String>,

    /// List what would be fetched, in order, from which source, and what a partial
    /// file would resume, without any network request and without writing anything
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub douyin: DouyinArgs,
}

/// What Douyin requests carry (`fetch`, `resolve`, `refresh`).
#[derive(Debug, Args)]
pub struct DouyinArgs {
    /// Netscape cookie file (as curl and yt-dlp read it) whose cookies for Douyin hosts
    /// go with Douyin lookups; never sent to other hosts [config douyin.cookies, env
    /// PMV_DOUYIN_COOKIES]
    #[arg(long, value_name = "FILE")]
    pub cookies: Option<PathBuf>,

    /// User-Agent of every Douyin request [config sources.douyin_user_agent, default:
    /// an iPhone Safari]
    #[arg(long, value_name = "UA")]
    pub douyin_user_agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Links or local paths to resolve
    #[arg(value_name = "URL", required_unless_present = "dataset")]
    pub urls: Vec<String>,

    /// Say what would be done without any network request
    #[arg(long)]
    pub offline: bool,

    /// The item id a link belongs to (finds the item's file in a shared OneDrive
    /// folder)
    #[arg(long, value_name = "ID")]
    pub item: Option<String>,

    /// Resolve every source of this dataset's items instead (from the catalog)
    #[arg(long, value_name = "NAME", conflicts_with = "urls")]
    pub dataset: Option<String>,

    /// With --dataset: at most this many items
    #[arg(long, value_name = "N", requires = "dataset")]
    pub limit: Option<u64>,

    #[command(flatten)]
    pub douyin: DouyinArgs,
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

    /// How frames are stored: raw (.frames.npy) or jpeg (one .jpg per frame)
    /// [default: the recipe's, raw without one]
    #[arg(long, value_enum, value_name = "CODEC")]
    pub codec: Option<CodecKind>,

    /// JPEG quality 1-100, with a JPEG codec [default: the recipe's, else 90]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: Option<u8>,

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
    #[arg(long, conflicts_with_all = SHARD_RUN_ARGS, conflicts_with_all = ["jobs", "rebuild"])]
    pub list_recipes: bool,

    /// Write the shard with this catalog id again from its videos, under a new name
    /// (with --jobs)
    #[arg(long, value_name = "SHARD_ID", conflicts_with_all = SHARD_RUN_ARGS)]
    pub rebuild: Option<i64>,
}

/// The options of a shard run, which `--list-recipes` and `--rebuild` take none of
/// (the global ones, such as `--json`, go with every command).
const SHARD_RUN_ARGS: [&str; 17] = [
    "dataset",
    "split",
    "recipe",
    "frames",
    "stride",
    "segments",
    "clips",
    "size",
    "fit",
    "short_side",
    "fps",
    "filter",
    "codec",
    "jpeg_quality",
    "samples_per_shard",
    "limit",
    "max_time",
];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Classes (2 to 12): pairs that differ only in direction, rotation sense, speed or
    /// shape
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(2..=12))]
    pub classes: u32,

    /// Videos per class; a quarter of them are held out for evaluation
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=10000))]
    pub videos_per_class: u32,

    /// Training epochs
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,

    /// Seed of the videos and of training
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Threads that render, encode and decode [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// End the run after this long (e.g. 5h30m): downloads in flight stop and keep
    /// their partial files, no new video is started, and the run ends cleanly
    /// [config refresh.max_duration]
    #[arg(long, value_name = "DUR")]
    pub max_duration: Option<humantime::Duration>,

    /// Fetch at most this many files in this run [config refresh.max_items]
    #[arg(long, value_name = "N")]
    pub max_items: Option<u64>,

    /// Fetch at most this many bytes in this run, e.g. 200GiB [config refresh.max_bytes]
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<String>,

    /// Re-hash this fraction of stored videos and shards: a slice that turns with each
    /// run, so 1/F runs cover everything [config refresh.verify_fraction, default 0.01]
    #[arg(long, value_name = "F", conflicts_with = "verify_all")]
    pub verify_fraction: Option<f64>,

    /// Re-hash every stored video and shard
    #[arg(long)]
    pub verify_all: bool,

    /// Fetch from hosts on this machine or a private network that a link names
    /// [config fetch.allow_private_hosts]
    #[arg(long)]
    pub allow_private_hosts: bool,

    /// Videos decoded at once by the shard stage [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    #[command(flatten)]
    pub douyin: DouyinArgs,
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
