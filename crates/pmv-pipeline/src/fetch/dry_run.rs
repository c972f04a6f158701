//! `fetch --dry-run`: the files a fetch would start, in the order its scheduler takes
//! them, each with the source it would try first (resolved offline, as `resolve
//! --offline` tells it) and the bytes of a partial file it would keep.
//!
//! Owns turning the planner's jobs into [`PlannedFile`]s. It never opens a connection,
//! never takes the root's lock and never writes: the catalog is read through the
//! planner's typed reads, the root's folders are only listed and `.partial` files only
//! measured.

use std::path::PathBuf;

use serde::Serialize;

use super::job::{Job, Stage};
use super::plan::Planner;
use super::verify::Role;
use super::{FetchError, FetchOptions, Names, download, real_import_dirs};
use crate::source::{SourceKind, resolve_offline};
use pmv_catalog::Catalog;
use pmv_core::root::DataRoot;

/// What a fetch with the same options would do, without doing it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRun {
    /// Every due file, in the order the scheduler would take them.
    pub files: Vec<PlannedFile>,
    /// Active items with no source at all (not fetched).
    pub no_source: u64,
}

/// One file a fetch would start.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    pub dataset: String,
    pub item: String,
    pub role: Role,
    /// The file's state in the catalog (`null`: never tried).
    pub state: Option<String>,
    /// The source tried first: its kind (`local` for an `--import-dir` file).
    pub kind: SourceKind,
    /// Its rank among the item's sources (`null` for an `--import-dir` file).
    pub rank: Option<usize>,
    /// The catalog's location of that source, or the path of the file imported.
    pub location: String,
    /// The URL that would be downloaded, when known without asking anyone.
    pub download_url: Option<String>,
    /// The first request a resolution would send, when one is needed.
    pub lookup_url: Option<String>,
    /// The host per-host politeness counts it under.
    pub host: String,
    /// The item's sources after this one, tried if it fails.
    pub fallbacks: usize,
    /// Bytes of `<file>.partial` on the disk (`null`: none).
    pub partial_bytes: Option<u64>,
    /// Bytes of it the download would keep and continue after (0: it starts over).
    pub resume_bytes: u64,
    /// A file under the final name is checked first (a download whose record was
    /// lost) and kept if it passes.
    pub adopt_check: bool,
    /// Why the first source cannot be used as it stands (a bad URL, say): the fetch
    /// would record this failure and go on with the next source.
    pub error: Option<String>,
}

/// Lists what [`super::run`] with `opts` would start, in its order. Reads the catalog
/// (a read-only connection is enough) and the root; writes nothing and sends nothing.
pub fn dry_run(
    root: &DataRoot,
    catalog: &Catalog,
    opts: &FetchOptions,
) -> Result<DryRun, FetchError> {
    let datasets = match &opts.dataset {
        Some(name) => vec![
            catalog
                .dataset(name)?
                .ok_or_else(|| FetchError::NoDataset(name.clone()))?,
        ],
        None => catalog.datasets()?,
    };
    let import = crate::source::local::ImportIndex::build(&real_import_dirs(opts)?);
    let mut planner = Planner::new(root, datasets, opts, import);
    let (_, no_source) = planner.count(catalog)?;
    let mut out = DryRun {
        files: vec![],
        no_source,
    };
    loop {
        let page = planner.next_page(catalog)?;
        if page.is_empty() {
            break;
        }
        out.files
            .extend(page.iter().map(|job| planned(root, opts, job)));
    }
    Ok(out)
}

fn planned(root: &DataRoot, opts: &FetchOptions, job: &Job) -> PlannedFile {
    let names = Names::new(root, &job.dataset, job.role, &job.key);
    let partial = names.partial();
    let partial_bytes = std::fs::symlink_metadata(&partial)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let mut p = PlannedFile {
        dataset: job.dataset.to_string(),
        item: job.key.clone(),
        role: job.role,
        state: job.prior.state.clone(),
        kind: SourceKind::Local,
        rank: job.rank(),
        location: String::new(),
        download_url: None,
        lookup_url: None,
        host: job.host.clone(),
        fallbacks: 0,
        partial_bytes,
        resume_bytes: 0,
        adopt_check: job.check_adopt,
        error: None,
    };
    match job.stage {
        Stage::Import => {
            let path: PathBuf = job.import.clone().unwrap_or_default();
            p.location = path.display().to_string();
            p.fallbacks = job.first_rank().map_or(0, |r| job.sources.len() - r);
        }
        Stage::Source(rank) => {
            let Some(loc) = job.sources.get(rank) else {
                return p;
            };
            p.kind = loc.kind;
            p.location = loc.location.clone();
            p.fallbacks = job.sources.len() - rank - 1;
            match resolve_offline(loc, Some(&job.key), &opts.sources) {
                Ok(o) => {
                    p.download_url = o.download_url;
                    p.lookup_url = o.lookup_url;
                    p.host = o.host;
                }
                Err(f) => p.error = Some(format!("{}: {}", f.class, f.message)),
            }
            // A local source is copied afresh; a download keeps what it can check.
            if loc.kind != SourceKind::Local
                && let Some(len) = partial_bytes
                && let Some(r) = download::resume_for(job, &partial, rank, &job.expected)
            {
                p.resume_bytes = if r.total.is_some_and(|t| len > t) {
                    0
                } else {
                    len
                };
            }
        }
    }
    p
}
