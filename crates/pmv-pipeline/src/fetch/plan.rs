//! Planning: which files of which items are due, read from the catalog page by page
//! so that memory stays flat however many items a dataset has.
//!
//! Owns the due rules: a file with no row, `pending`, `downloading` (resumed) or
//! `downloaded` is due; `failed_transient` when its retry time has come (or with
//! `--retry-failed`); `failed_permanent` only with `--include-permanent` (or, for a
//! file refused for naming a private host, with `--allow-private-hosts`); `corrupt`
//! when the item has a source after the one that gave the corrupt bytes; `verified`
//! and `sharded` never. It only reads the catalog, through its typed reads
//! ([`Catalog::plan_page`], [`Catalog::for_each_item_sources`]).

use std::sync::Arc;

use super::FetchOptions;
use super::job::{Job, Prior, ResumeFrom, Stage};
use super::verify::{Expected, Role};
use crate::manifest::Locator;
use crate::source::local::ImportIndex;
use crate::source::{SourceSettings, primary_host};
use pmv_catalog::{Catalog, CatalogError, Dataset};
use pmv_core::util::now_unix;

/// Items read per page.
const PAGE_ITEMS: i64 = 512;

pub(crate) struct Planner {
    datasets: Vec<Dataset>,
    split: Option<String>,
    limit: Option<u64>,
    retry_failed: bool,
    include_permanent: bool,
    /// Private hosts may be fetched now: files refused for naming one are due again.
    allow_private: bool,
    sources: SourceSettings,
    import: Option<ImportIndex>,
    now: i64,
    root: pmv_core::root::DataRoot,
    /// Names of the files in the current dataset's `videos/` and `covers/` folders,
    /// read once when the dataset's first page is planned: a file under a final name
    /// whose record was lost (a run killed between renaming and recording it) is
    /// found here instead of by a dozen lookups per job.
    present: Option<(usize, [std::collections::HashSet<String>; 2])>,
    // Cursor.
    ds: usize,
    after: i64,
    items_taken: u64,
}

/// One row as read.
struct ItemRow {
    id: i64,
    key: String,
    video: Option<String>,
    cover: Option<String>,
    size: Option<i64>,
    sha256: Option<String>,
    priors: [Prior; 2],
}

impl Planner {
    pub fn new(
        root: &pmv_core::root::DataRoot,
        datasets: Vec<Dataset>,
        opts: &FetchOptions,
        import: Option<ImportIndex>,
    ) -> Planner {
        Planner {
            datasets,
            split: opts.split.clone(),
            limit: opts.limit,
            retry_failed: opts.retry_failed,
            include_permanent: opts.include_permanent,
            allow_private: opts.settings.allow_private_hosts,
            sources: opts.sources.clone(),
            import,
            now: now_unix(),
            root: root.clone(),
            present: None,
            ds: 0,
            after: 0,
            items_taken: 0,
        }
    }

    /// Counts the due files (within the limit) and the active items without a
    /// source, with one pass that keeps nothing.
    pub fn count(&self, cat: &Catalog) -> Result<(u64, u64), CatalogError> {
        let mut files = 0u64;
        let mut items = 0u64;
        let mut no_source = 0u64;
        for d in &self.datasets {
            let mut after = 0i64;
            loop {
                let rows = self.read(cat, d.id, after)?;
                let Some(last) = rows.last() else { break };
                after = last.id;
                for row in &rows {
                    if row.video.is_none() && self.import_for(row, Role::Video, &[]).is_none() {
                        no_source += 1;
                    }
                    if self.limit.is_some_and(|l| items >= l) {
                        continue;
                    }
                    let n = [Role::Video, Role::Cover]
                        .iter()
                        .filter(|r| self.due(row, **r).is_some())
                        .count() as u64;
                    if n > 0 {
                        files += n;
                        items += 1;
                    }
                }
            }
        }
        Ok((files, no_source))
    }

    /// The next page of due jobs; empty when everything was planned.
    pub fn next_page(&mut self, cat: &Catalog) -> Result<Vec<Job>, CatalogError> {
        let mut out = vec![];
        while out.is_empty() && self.ds < self.datasets.len() {
            if self.limit.is_some_and(|l| self.items_taken >= l) {
                self.ds = self.datasets.len();
                break;
            }
            let dataset: Arc<str> = self.datasets[self.ds].name.as_str().into();
            if self.present.as_ref().is_none_or(|(d, _)| *d != self.ds) {
                self.present = Some((self.ds, self.list_present(&dataset)));
            }
            let rows = self.read(cat, self.datasets[self.ds].id, self.after)?;
            let Some(last) = rows.last() else {
                self.ds += 1;
                self.after = 0;
                continue;
            };
            self.after = last.id;
            for row in rows {
                if self.limit.is_some_and(|l| self.items_taken >= l) {
                    break;
                }
                let mut any = false;
                for role in [Role::Video, Role::Cover] {
                    if let Some(job) = self.job(&row, role, &dataset) {
                        out.push(job);
                        any = true;
                    }
                }
                if any {
                    self.items_taken += 1;
                }
            }
        }
        Ok(out)
    }

    /// The final names present in a dataset's folders (unreadable folders count as
    /// empty: a fetch then downloads again what it cannot see).
    fn list_present(&self, dataset: &str) -> [std::collections::HashSet<String>; 2] {
        let list = |dir: std::path::PathBuf, role: Role| {
            let mut names = std::collections::HashSet::new();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let ext = name.rsplit_once('.').map_or("", |(_, x)| x);
                    if role.extensions().contains(&ext) {
                        names.insert(name.to_owned());
                    }
                }
            }
            names
        };
        [
            list(self.root.videos_dir().join(dataset), Role::Video),
            list(self.root.covers_dir().join(dataset), Role::Cover),
        ]
    }

    fn read(
        &self,
        cat: &Catalog,
        dataset_id: i64,
        after: i64,
    ) -> Result<Vec<ItemRow>, CatalogError> {
        let items = cat.plan_page(dataset_id, after, self.split.as_deref(), PAGE_ITEMS)?;
        Ok(items
            .into_iter()
            .map(|i| {
                let [video, cover] = i.files;
                ItemRow {
                    id: i.id,
                    key: i.key,
                    video: i.video_sources,
                    cover: i.cover_sources,
                    size: i.expected_size,
                    sha256: i.expected_sha256,
                    priors: [video, cover],
                }
            })
            .collect())
    }

    /// The file of an import folder for an item's role: named by the item id, else by
    /// the Douyin id one of its Douyin links names (as yt-dlp names its downloads).
    fn import_for(
        &self,
        row: &ItemRow,
        role: Role,
        sources: &[Locator],
    ) -> Option<&std::path::Path> {
        let index = self.import.as_ref()?;
        index.find(&row.key, role).or_else(|| {
            sources
                .iter()
                .filter(|l| l.kind == crate::source::SourceKind::Douyin)
                .filter_map(|l| crate::source::douyin::link_id(&l.location))
                .find_map(|id| index.find(&id, role))
        })
    }

    /// Whether a file is due, and its list of sources.
    fn due(&self, row: &ItemRow, role: Role) -> Option<Vec<Locator>> {
        let (json, prior) = match role {
            Role::Video => (&row.video, &row.priors[0]),
            Role::Cover => (&row.cover, &row.priors[1]),
        };
        let sources: Vec<Locator> = match json {
            Some(j) => match serde_json::from_str(j) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(item = %row.key, "unreadable sources in the catalog: {e}");
                    vec![]
                }
            },
            None => vec![],
        };
        let import = self.import_for(row, role, &sources).is_some();
        if sources.is_empty() && !import {
            return None;
        }
        let ok = match prior.state.as_deref() {
            None | Some("pending") | Some("downloading") | Some("downloaded") => true,
            Some("verified") | Some("sharded") => false,
            Some("failed_transient") => {
                self.retry_failed || prior.next_retry_at.is_none_or(|t| t <= self.now)
            }
            Some("failed_permanent") => {
                self.include_permanent
                    || (self.allow_private && prior.error_class.as_deref() == Some("private_host"))
            }
            Some("corrupt") => {
                let next = prior.source_rank.map_or(0, |r| r + 1);
                (next as usize) < sources.len()
            }
            Some(other) => {
                tracing::warn!(item = %row.key, state = other, "unknown file state; skipped");
                false
            }
        };
        ok.then_some(sources)
    }

    fn present_under_final_name(&self, key: &str, role: Role) -> bool {
        let Some((_, sets)) = &self.present else {
            return false;
        };
        let set = &sets[match role {
            Role::Video => 0,
            Role::Cover => 1,
        }];
        if set.is_empty() {
            return false;
        }
        let stem = crate::manifest::file_stem(key);
        role.extensions()
            .iter()
            .any(|e| set.contains(&format!("{stem}.{e}")))
    }

    fn job(&self, row: &ItemRow, role: Role, dataset: &Arc<str>) -> Option<Job> {
        let sources = self.due(row, role)?;
        let prior = match role {
            Role::Video => row.priors[0].clone(),
            Role::Cover => row.priors[1].clone(),
        };
        let expected = match role {
            Role::Video => Expected {
                size: row.size.map(|s| s as u64),
                sha256: row.sha256.clone(),
                ..Expected::default()
            },
            Role::Cover => Expected::default(),
        };
        let resume = match (prior.state.as_deref(), prior.source_rank) {
            (Some("downloading") | Some("failed_transient"), Some(r)) if r >= 0 => {
                Some(ResumeFrom {
                    rank: r as usize,
                    etag: prior.etag.clone(),
                    last_modified: prior.last_modified.clone(),
                    total: prior.size.map(|s| s as u64),
                })
            }
            _ => None,
        };
        // A corrupt file that came from an import folder is not imported again.
        let from_import = prior.state.as_deref() == Some("corrupt") && prior.source_rank.is_none();
        let import = self
            .import_for(row, role, &sources)
            .filter(|_| !from_import)
            .map(|p| p.to_owned());
        let mut job = Job {
            item_id: row.id,
            key: row.key.clone(),
            dataset: Arc::clone(dataset),
            role,
            sources: sources.into(),
            expected,
            check_adopt: prior.may_adopt() && self.present_under_final_name(&row.key, role),
            prior,
            import,
            stage: Stage::Import,
            host: String::new(),
            tries: 0,
            content_failures: 0,
            first_transient: None,
            failures: vec![],
            attempts: 0,
            resume,
        };
        if job.import.is_none() {
            job.stage = Stage::Source(job.first_rank()?);
        }
        job.host = host_of(&job, &self.sources);
        Some(job)
    }
}

/// The host a job's current stage is counted under.
pub(crate) fn host_of(job: &Job, sources: &SourceSettings) -> String {
    match job.stage {
        Stage::Import => "local".into(),
        Stage::Source(r) => job
            .sources
            .get(r)
            .map_or_else(String::new, |l| primary_host(l, sources)),
    }
}

/// One candidate source of one file, as the catalog holds it.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub dataset: String,
    pub key: String,
    pub role: Role,
    pub rank: usize,
    pub locator: Locator,
}

/// Calls `f` for every candidate source of the active items of a dataset (in item
/// order), e.g. to resolve them all offline. Returns the number of items seen.
pub fn for_each_source(
    cat: &Catalog,
    dataset: &Dataset,
    limit: Option<u64>,
    mut f: impl FnMut(SourceRow),
) -> Result<u64, CatalogError> {
    cat.for_each_item_sources(dataset.id, limit, |key, video, cover| {
        for (role, json) in [(Role::Video, video), (Role::Cover, cover)] {
            let Some(json) = json else { continue };
            let list: Vec<Locator> = serde_json::from_str(&json)
                .map_err(|e| cat.invalid(format!("item {key}: unreadable sources: {e}")))?;
            for (rank, locator) in list.into_iter().enumerate() {
                f(SourceRow {
                    dataset: dataset.name.clone(),
                    key: key.clone(),
                    role,
                    rank,
                    locator,
                });
            }
        }
        Ok(())
    })
}
