//! Fetch: download every file the catalog says is missing or due for retry, resumably
//! and verifiably, and record each result durably.
//!
//! The calling thread owns the catalog: it plans work page by page (`plan`) and
//! records results in group commits (`commit`). A tokio runtime runs the scheduler
//! (`sched`): global and per-host concurrency, per-host rate and back-off
//! ([`crate::net::politeness`]), retries with the failure taxonomy
//! ([`crate::net::failure`]). Each attempt
//! resolves a candidate source (`crate::source`) and streams it into
//! `<file>.partial` with Range resume and hashing (`download`); a file is renamed to
//! its final name only after its size, every known hash and its container check
//! ([`verify`]) pass and its bytes are durable, and only then is it marked `verified`.
//! A killed run loses nothing: partial files are resumed, no unverified file sits
//! under a final name, and the catalog never claims a file that is not there.
//! Budgets (a deadline, a byte budget) and cancellation stop the downloads in flight,
//! whatever they wait for, keeping their partial files; a disk too full for the next
//! file ([`space`]) stops the starting of downloads and ends the run with an error
//! that names the disk.
//!
//! This module never decodes media and never deletes a verified file (a re-hash that
//! finds changed bytes moves the file to `quarantine/`, see [`rehash()`]).

mod commit;
mod download;
pub mod dry_run;
mod event;
mod job;
mod plan;
pub mod quickxor;
pub mod rehash;
mod report;
mod sched;
pub mod space;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::manifest::Locator;
use crate::source::local::LocalRoots;
use crate::source::{Resolved, Resolver, SourceSettings};
use pmv_catalog::{Catalog, CatalogError};
use pmv_core::report::{Reporter, Unit};
use pmv_core::root::DataRoot;

pub use crate::net::failure::{ErrorClass, Failure};
pub use crate::net::settings::FetchSettings;
pub use dry_run::{DryRun, PlannedFile, dry_run};
pub use plan::{SourceRow, for_each_source};
pub use rehash::{RehashOptions, RehashReport, RehashSelect, rehash};
pub use report::{FailureExample, FetchReport};
pub use space::NoSpace;
pub use verify::{Expected, Role};

/// What to fetch and how. Every `fetch` flag has a field here.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Only this dataset (default: all).
    pub dataset: Option<String>,
    /// Only items in this split.
    pub split: Option<String>,
    /// At most this many items (each with its video and cover).
    pub limit: Option<u64>,
    /// Retry `failed_transient` files now, not only those whose retry time has come.
    pub retry_failed: bool,
    /// Also retry `failed_permanent` files, from their first source.
    pub include_permanent: bool,
    /// Folders of already downloaded files (`<id>.<ext>`, searched a few levels deep),
    /// imported before any remote source is tried.
    pub import_dirs: Vec<PathBuf>,
    /// Folders local sources may be read from besides their dataset's manifests'
    /// folders and `import_dirs` (the configuration's `local_roots`).
    pub local_roots: Vec<PathBuf>,
    pub settings: FetchSettings,
    pub sources: SourceSettings,
    /// End the run at this instant: downloads in flight stop (keeping their partial
    /// files for the next run) and the run ends cleanly within [`GRACE`].
    pub deadline: Option<Instant>,
    /// End the run once this many bytes were received in this run, the same way
    /// (a run may end over it by the chunks in flight at that moment).
    pub max_bytes: Option<u64>,
    /// Set (by a Ctrl-C handler) to stop: in-flight downloads stop at once (the flag
    /// is looked at every 200 ms), keeping their `.partial` files, and the catalog is
    /// left consistent.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A failure that stops the whole run (per-file failures are recorded, not raised).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no dataset named '{0}' in the catalog")]
    NoDataset(String),
    #[error("{}", io_message(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the download runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    NoSpace(Box<NoSpace>),
}

/// How long after its deadline a run may take to end: what is already downloaded is
/// made durable and recorded (one group commit), lookups still waiting in the
/// resolver are given up. Downloads in flight stop at the deadline itself.
pub const GRACE: Duration = Duration::from_secs(5);

/// `cannot write <path>: <error>`, without naming the path twice (errors from
/// fs-err name it already).
fn io_message(path: &std::path::Path, source: &std::io::Error) -> String {
    let text = source.to_string();
    if text.contains(&path.display().to_string()) {
        text
    } else {
        format!("cannot write {}: {text}", path.display())
    }
}

/// Where a file of an item lives in the root: `videos/<dataset>/<stem>.<ext>` or
/// `covers/<dataset>/<stem>.<ext>`, the stem from the sanitised item id.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// Absolute directory.
    pub dir: PathBuf,
    /// Directory relative to the root (`videos/pmv400`).
    pub rel_dir: String,
    pub stem: String,
}

impl Names {
    pub fn new(root: &DataRoot, dataset: &str, role: Role, key: &str) -> Names {
        let top = match role {
            Role::Video => "videos",
            Role::Cover => "covers",
        };
        Names {
            dir: root.path().join(top).join(dataset),
            rel_dir: format!("{top}/{dataset}"),
            stem: crate::manifest::file_stem(key).into_owned(),
        }
    }

    pub fn partial(&self) -> PathBuf {
        self.dir.join(format!("{}.partial", self.stem))
    }

    pub fn final_path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.stem))
    }

    pub fn final_rel(&self, ext: &str) -> String {
        format!("{}/{}.{ext}", self.rel_dir, self.stem)
    }
}

/// Why a run stops before its work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Ctrl-C or SIGTERM.
    Cancelled,
    /// The time budget ended.
    Deadline,
    /// The byte budget was spent.
    ByteBudget,
}

impl Stop {
    /// The `stopped` value of the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Cancelled => "cancelled",
            Stop::Deadline => "deadline",
            Stop::ByteBudget => "byte budget",
        }
    }
}

/// Cancellation shared by the calling thread and the runtime: downloads in flight
/// stop at once, keeping their partial files.
pub(crate) struct Cancel {
    flag: AtomicBool,
    why: std::sync::OnceLock<Stop>,
    tx: tokio::sync::watch::Sender<bool>,
}

impl Cancel {
    fn new() -> Cancel {
        Cancel {
            flag: AtomicBool::new(false),
            why: std::sync::OnceLock::new(),
            tx: tokio::sync::watch::channel(false).0,
        }
    }

    /// Stops the run; the first reason given is kept.
    pub fn trigger(&self, why: Stop) {
        let _ = self.why.set(why);
        self.flag.store(true, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Why the run was stopped, once it was.
    pub fn reason(&self) -> Option<Stop> {
        self.why.get().copied()
    }

    /// Completes once the run is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// What the calling thread and the runtime both see.
pub(crate) struct Shared {
    pub cancel: Cancel,
    /// Bytes received so far (progress).
    pub bytes: AtomicU64,
    /// The byte budget of the run.
    pub max_bytes: Option<u64>,
    /// The first download that did not fit on the disk (reported when the run ends).
    pub no_space: std::sync::Mutex<Option<NoSpace>>,
    /// The disk is full (its reserve reached, or a write failed): no download starts.
    pub disk_full: AtomicBool,
}

impl Shared {
    /// Counts received bytes; spending the byte budget stops the run.
    pub fn add_bytes(&self, n: u64) {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if self.max_bytes.is_some_and(|m| total >= m) {
            self.cancel.trigger(Stop::ByteBudget);
        }
    }

    /// Records a download that did not fit: the first is reported; a full disk stops
    /// the starting of downloads.
    pub fn out_of_space(&self, e: NoSpace) {
        if e.stops_run() {
            self.disk_full.store(true, Ordering::SeqCst);
        }
        let mut first = self.no_space.lock().expect("no-space lock");
        // A full disk says more than one file too large for it.
        if first
            .as_ref()
            .is_none_or(|f| !f.stops_run() && e.stops_run())
        {
            *first = Some(e);
        }
    }

    /// Whether no download may start for want of room.
    pub fn is_out_of_space(&self) -> bool {
        self.disk_full.load(Ordering::SeqCst)
    }
}

/// The folders each dataset's local sources may be read from: those its manifests
/// were ingested with (each one's own folder tree and `--base-dir`; the manifest's own
/// folder for one ingested before they were recorded), the configured `local_roots` and
/// this run's `--import-dir` folders. Checked again where each file is opened, so a row
/// stored by an older version, or a configuration that changed since, reads nothing
/// outside them.
fn local_roots(
    catalog: &Catalog,
    datasets: &[pmv_catalog::Dataset],
    opts: &FetchOptions,
) -> Result<std::collections::HashMap<String, LocalRoots>, FetchError> {
    let common = LocalRoots::new(opts.local_roots.iter().chain(&opts.import_dirs));
    let mut out = std::collections::HashMap::new();
    for d in datasets {
        let mut roots = common.clone();
        for (manifest, dirs) in catalog.manifest_roots(d.id)? {
            if dirs.is_empty() {
                let tree = if manifest.is_dir() {
                    manifest.as_path()
                } else {
                    manifest.parent().unwrap_or(&manifest)
                };
                roots.add(tree);
            }
            for dir in &dirs {
                roots.add(dir);
            }
        }
        out.insert(d.name.clone(), roots);
    }
    Ok(out)
}

/// Downloads every due file of the selected datasets. Per-file failures are recorded
/// in the catalog and counted in the report; only problems with the root or the
/// catalog are errors.
pub fn run(
    root: &DataRoot,
    catalog: &mut Catalog,
    opts: &FetchOptions,
    reporter: &dyn Reporter,
) -> Result<FetchReport, FetchError> {
    let started = Instant::now();
    let datasets = match &opts.dataset {
        Some(name) => vec![
            catalog
                .dataset(name)?
                .ok_or_else(|| FetchError::NoDataset(name.clone()))?,
        ],
        None => catalog.datasets()?,
    };
    create_dataset_dirs(root, &datasets)?;
    let local_roots = local_roots(catalog, &datasets, opts)?;
    let import = crate::source::local::ImportIndex::build(&real_import_dirs(opts)?);
    let mut planner = plan::Planner::new(root, datasets, opts, import);
    let (total, no_source) = planner.count(catalog)?;
    let mut report = FetchReport {
        planned: total,
        no_source,
        ..FetchReport::default()
    };
    if total == 0 {
        report.finish(started.elapsed());
        return Ok(report);
    }
    reporter.begin("fetch", Some(total), Unit::Items);
    reporter.begin_sub("received", None, Unit::Bytes);

    let shared = Arc::new(Shared {
        cancel: Cancel::new(),
        bytes: AtomicU64::new(0),
        max_bytes: opts.max_bytes,
        no_space: std::sync::Mutex::new(None),
        disk_full: AtomicBool::new(false),
    });
    let (runtime, scheduler, rx) = start_scheduler(root, opts, local_roots, &shared)?;

    let mut committer = commit::Committer::new(root.clone(), &opts.settings);
    let mut fatal: Option<FetchError> = None;
    let mut last_bytes = 0u64;
    let mut last_note = Instant::now();
    let external = opts.cancel.clone();
    loop {
        let wait = committer
            .time_to_flush()
            .unwrap_or(Duration::from_millis(200))
            .min(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok(event::Event::NeedJobs(reply)) => {
                let jobs = if fatal.is_some() || shared.cancel.is_set() {
                    vec![]
                } else {
                    match planner.next_page(catalog) {
                        Ok(jobs) => jobs,
                        Err(e) => {
                            shared.cancel.trigger(Stop::Cancelled);
                            fatal.get_or_insert(e.into());
                            vec![]
                        }
                    }
                };
                let _ = reply.send(jobs);
            }
            Ok(ev) => committer.push(ev, &mut report, reporter),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if external.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) && !shared.cancel.is_set() {
            tracing::warn!("interrupted: stopping downloads, keeping partial files");
            report.stopped = Some("cancelled".into());
            shared.cancel.trigger(Stop::Cancelled);
        }
        if committer.due()
            && let Err(e) = committer.flush(catalog, &mut report, reporter)
        {
            shared.cancel.trigger(Stop::Cancelled);
            fatal.get_or_insert(e);
        }
        let b = shared.bytes.load(Ordering::Relaxed);
        if b > last_bytes {
            reporter.advance_sub(b - last_bytes);
            last_bytes = b;
        }
        if last_note.elapsed() >= Duration::from_millis(500) {
            last_note = Instant::now();
            reporter.message(&report.progress_note());
        }
    }
    if let Err(e) = committer.flush(catalog, &mut report, reporter) {
        fatal.get_or_insert(e);
    }
    let outcome = runtime.block_on(scheduler);
    runtime.shutdown_timeout(Duration::from_secs(1));
    reporter.end();
    settle(outcome, fatal, &shared, report, started)
}

/// Creates each dataset's `videos/` and `covers/` folders that are missing.
fn create_dataset_dirs(
    root: &DataRoot,
    datasets: &[pmv_catalog::Dataset],
) -> Result<(), FetchError> {
    for d in datasets {
        for top in [root.videos_dir(), root.covers_dir()] {
            let dir = top.join(&d.name);
            if !dir.is_dir() {
                fs_err::create_dir_all(&dir).map_err(|source| FetchError::Io {
                    path: dir.clone(),
                    source,
                })?;
                pmv_core::util::sync_dir(&top).map_err(|source| FetchError::Io {
                    path: top.clone(),
                    source,
                })?;
            }
        }
    }
    Ok(())
}

/// The real paths of the import folders: what the index finds is opened and checked
/// like any local source.
fn real_import_dirs(opts: &FetchOptions) -> Result<Vec<PathBuf>, FetchError> {
    let mut import_dirs = Vec::with_capacity(opts.import_dirs.len());
    for d in &opts.import_dirs {
        let real = std::path::absolute(d)
            .and_then(|a| crate::source::local::real_path(&a))
            .map_err(|source| FetchError::Io {
                path: d.clone(),
                source,
            })?;
        import_dirs.push(real);
    }
    Ok(import_dirs)
}

/// The scheduler as it runs on its runtime.
type Scheduler = tokio::task::JoinHandle<Result<sched::SchedEnd, FetchError>>;

/// Starts the download runtime and the scheduler on it; returns them with the
/// channel its events arrive on.
fn start_scheduler(
    root: &DataRoot,
    opts: &FetchOptions,
    local_roots: std::collections::HashMap<String, LocalRoots>,
    shared: &Arc<Shared>,
) -> Result<
    (
        tokio::runtime::Runtime,
        Scheduler,
        std::sync::mpsc::Receiver<event::Event>,
    ),
    FetchError,
> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
        )
        .thread_name("pmv-fetch")
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    let gate = crate::net::politeness::Politeness::new(opts.settings.per_host, opts.settings.rate);
    let client = Arc::new(
        crate::net::client::Client::new(&opts.settings, Arc::clone(&gate))
            .map_err(|e| FetchError::Client(e.to_string()))?,
    );
    let (tx, rx) = std::sync::mpsc::channel::<event::Event>();
    let ctx = download::Ctx {
        resolver: Resolver::new(Arc::clone(&client), opts.sources.clone()),
        client,
        gate,
        settings: opts.settings.clone(),
        root: root.clone(),
        events: tx,
        shared: Arc::clone(shared),
        deadline: opts.deadline,
        local_roots,
        disk: space::Disk::new(root.path(), &opts.settings),
    };
    let scheduler = runtime.spawn(sched::run(ctx));
    Ok((runtime, scheduler, rx))
}

/// The run's result once the scheduler ended: the report completed with how the
/// scheduler ended, or the error that stopped the run (a full disk first).
fn settle(
    outcome: Result<Result<sched::SchedEnd, FetchError>, tokio::task::JoinError>,
    mut fatal: Option<FetchError>,
    shared: &Shared,
    mut report: FetchReport,
    started: Instant,
) -> Result<FetchReport, FetchError> {
    match outcome {
        Ok(Ok(end)) => {
            if report.stopped.is_none() {
                report.stopped = end.stopped;
            }
            report.not_started = if report.stopped.is_some() {
                report
                    .planned
                    .saturating_sub(report.verified + report.failed() + report.interrupted)
            } else {
                end.not_started
            };
            report.throttled = end.throttled;
            report.retries = end.retries;
        }
        Ok(Err(e)) => {
            fatal.get_or_insert(e);
        }
        Err(join) => {
            fatal.get_or_insert(FetchError::Runtime(std::io::Error::other(join.to_string())));
        }
    }
    // A full disk explains the errors that came of it (a catalog write that found no
    // room, say), so it is the one reported.
    let no_space = shared.no_space.lock().expect("no-space lock").take();
    if let Some(ns) = no_space {
        if let Some(e) = fatal {
            tracing::error!("{e}");
        }
        tracing::info!("{}", report.summary());
        return Err(FetchError::NoSpace(Box::new(ns)));
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    report.bytes = shared.bytes.load(Ordering::Relaxed);
    report.finish(started.elapsed());
    Ok(report)
}

/// Resolves links online, without downloading their bodies (the `resolve` command):
/// each with the item key used to find it in a shared folder.
pub fn resolve_online(
    settings: &FetchSettings,
    sources: &SourceSettings,
    links: &[(Locator, Option<String>)],
) -> Result<Vec<Result<Resolved, Failure>>, FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    let gate = crate::net::politeness::Politeness::new(settings.per_host, settings.rate);
    let client = Arc::new(
        crate::net::client::Client::new(settings, gate)
            .map_err(|e| FetchError::Client(e.to_string()))?,
    );
    let resolver = Resolver::new(client, sources.clone());
    Ok(runtime.block_on(async {
        let mut out = Vec::with_capacity(links.len());
        for (loc, key) in links {
            out.push(resolver.resolve(loc, key.as_deref(), true).await);
        }
        out
    }))
}
