//! Read-only summaries of the catalog for `pmv-data status`.
//!
//! Owns the counting queries (items, classes, splits, file states, bytes, sources,
//! failures, manifests, recent runs). Everything here only reads.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Catalog, Dataset, FILE_STATES, Result};
use pmv_core::util::rfc3339;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema_version: u32,
    pub journal_mode: &'static str,
    pub datasets: Vec<DatasetStatus>,
    pub runs: Vec<RunSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetStatus {
    pub name: String,
    pub format: String,
    pub multi_label: bool,
    /// Active items (listed by at least one manifest).
    pub items: u64,
    /// Items no manifest lists any more; their files are kept.
    pub removed: u64,
    pub classes: u64,
    /// Active items per split; an item listed in two splits (PMV-400 val and test)
    /// counts in both.
    pub splits: BTreeMap<String, u64>,
    /// Files of active items per state; expected files not yet taken are `pending`.
    pub states: BTreeMap<String, u64>,
    /// The same per role (video, cover).
    pub roles: BTreeMap<String, BTreeMap<String, u64>>,
    /// Bytes of files stored (downloaded, verified or sharded), all items.
    #[serde(rename = "stored_bytes")]
    pub bytes: u64,
    /// Active items with no video source yet.
    pub no_source: u64,
    /// Active items by the kind of their first video source.
    pub sources: BTreeMap<String, u64>,
    /// Failed files by error class.
    pub failures: BTreeMap<String, u64>,
    /// Files the next fetch takes: pending ones, interrupted downloads, and transient
    /// failures whose retry time has come.
    pub due: u64,
    /// Transient failures waiting for their retry time.
    pub waiting: u64,
    /// Shards per recipe, and the videos still waiting for a sample of it.
    pub shards: Vec<RecipeStatus>,
    pub manifests: Vec<ManifestStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecipeStatus {
    pub recipe_id: String,
    pub name: String,
    /// Live shards and their samples and bytes.
    pub shards: u64,
    pub samples: u64,
    #[serde(rename = "stored_bytes")]
    pub bytes: u64,
    /// Active items whose video is verified but has no live sample of this recipe.
    pub backlog: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestStatus {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub ingested_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    #[serde(rename = "run_id")]
    pub id: String,
    pub command: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl Catalog {
    /// Status of every dataset, or only of `only`.
    pub fn status(&self, only: Option<&str>) -> Result<Status> {
        let datasets = match only {
            Some(name) => match self.dataset(name)? {
                Some(d) => vec![d],
                None => return Err(self.invalid(format!("no dataset named '{name}'"))),
            },
            None => self.datasets()?,
        };
        let mut out = Vec::with_capacity(datasets.len());
        for d in &datasets {
            out.push(self.dataset_status(d)?);
        }
        Ok(Status {
            schema_version: self.schema_version()?,
            journal_mode: self.journal_mode(),
            datasets: out,
            runs: self.recent_runs(5)?,
        })
    }

    fn count(&self, sql: &str, id: i64) -> Result<u64> {
        self.conn
            .query_row(sql, [id], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }

    fn grouped(&self, sql: &str, id: i64) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    fn dataset_status(&self, d: &Dataset) -> Result<DatasetStatus> {
        let id = d.id;
        let (items, removed, no_source) = self.item_counts(id)?;
        let classes = self.count("SELECT count(*) FROM classes WHERE dataset_id = ?1", id)?;
        // Removed items have no memberships left, so every membership counts.
        let splits = self.grouped(
            "SELECT m.split, count(DISTINCT m.item_id) FROM memberships m \
             JOIN manifests f ON f.id = m.manifest_id WHERE f.dataset_id = ?1 GROUP BY m.split",
            id,
        )?;

        // One pass over the active items: whether each expects a cover, and the kind of
        // its first video source. `video_sources` is written by ingest and always starts
        // with `[{"kind":"<kind>"`, so the kind is read without parsing the JSON.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT cover_sources IS NOT NULL, \
                   substr(video_sources, 11, instr(substr(video_sources, 11), '\"') - 1), count(*) \
                 FROM items WHERE dataset_id = ?1 AND state = 'active' GROUP BY 1, 2",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, bool>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut covers = 0;
        let mut sources: BTreeMap<String, u64> = BTreeMap::new();
        for row in rows {
            let (cover, kind, n) = row.map_err(|e| self.sql(e))?;
            if cover {
                covers += n;
            }
            if let Some(kind) = kind {
                *sources.entry(kind).or_default() += n;
            }
        }

        // Files per role and state; an expected file without a row is pending.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT f.role, f.state, count(*) FROM files f JOIN items i ON i.id = f.item_id \
                 WHERE i.dataset_id = ?1 AND i.state = 'active' GROUP BY 1, 2",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut roles: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (role, expected) in [("video", items), ("cover", covers)] {
            if expected > 0 {
                roles
                    .entry(role.into())
                    .or_default()
                    .insert("pending".into(), expected);
            }
        }
        for row in rows {
            let (role, state, n) = row.map_err(|e| self.sql(e))?;
            let per_state = roles.entry(role).or_default();
            if state != "pending" {
                let pending = per_state.entry("pending".into()).or_default();
                *pending = pending.saturating_sub(n);
                *per_state.entry(state).or_default() += n;
            }
        }
        let mut states: BTreeMap<String, u64> =
            FILE_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        for per_state in roles.values() {
            for (state, n) in per_state {
                *states.entry(state.clone()).or_default() += n;
            }
        }

        let bytes = self.count(
            "SELECT coalesce(sum(f.size), 0) FROM files f JOIN items i ON i.id = f.item_id \
             WHERE i.dataset_id = ?1 AND f.state IN ('downloaded', 'verified', 'sharded')",
            id,
        )?;
        let failures = self.grouped(
            "SELECT coalesce(f.error_class, 'unknown'), count(*) FROM files f \
             JOIN items i ON i.id = f.item_id WHERE i.dataset_id = ?1 \
             AND f.state IN ('failed_transient', 'failed_permanent', 'corrupt') GROUP BY 1",
            id,
        )?;
        let now = pmv_core::util::now_unix();
        let (due_retry, waiting): (i64, i64) = self
            .conn
            .query_row(
                "SELECT coalesce(sum(f.next_retry_at IS NULL OR f.next_retry_at <= ?2), 0), \
                        coalesce(sum(f.next_retry_at > ?2), 0) \
                 FROM files f JOIN items i ON i.id = f.item_id \
                 WHERE i.dataset_id = ?1 AND i.state = 'active' AND f.state = 'failed_transient'",
                rusqlite::params![id, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sql(e))?;
        let due = states.get("pending").copied().unwrap_or(0)
            + states.get("downloading").copied().unwrap_or(0)
            + due_retry as u64;
        let shards = self.recipe_status(id)?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, sha256, rows, accepted, rejected, ingested_at FROM manifests \
                 WHERE dataset_id = ?1 ORDER BY path",
            )
            .map_err(|e| self.sql(e))?;
        let manifests = stmt
            .query_map([id], |r| {
                Ok(ManifestStatus {
                    path: r.get(0)?,
                    sha256: r.get(1)?,
                    rows: r.get::<_, i64>(2)? as u64,
                    accepted: r.get::<_, i64>(3)? as u64,
                    rejected: r.get::<_, i64>(4)? as u64,
                    ingested_at: rfc3339(r.get(5)?),
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        Ok(DatasetStatus {
            name: d.name.clone(),
            format: d.format.as_str().to_owned(),
            multi_label: d.multi_label,
            items,
            removed,
            classes,
            splits,
            states,
            roles,
            bytes,
            no_source,
            sources,
            failures,
            due,
            waiting: waiting as u64,
            shards,
            manifests,
        })
    }

    /// The live shards of each recipe a dataset has shards of, and its backlog.
    fn recipe_status(&self, dataset_id: i64) -> Result<Vec<RecipeStatus>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.recipe_id, r.name, count(*), coalesce(sum(s.samples), 0), \
                        coalesce(sum(s.bytes), 0) \
                 FROM shards s JOIN recipes r ON r.id = s.recipe_id \
                 WHERE s.dataset_id = ?1 AND s.state = 'live' GROUP BY s.recipe_id ORDER BY r.name",
            )
            .map_err(|e| self.sql(e))?;
        let mut out: Vec<RecipeStatus> = stmt
            .query_map([dataset_id], |r| {
                Ok(RecipeStatus {
                    recipe_id: r.get(0)?,
                    name: r.get(1)?,
                    shards: r.get::<_, i64>(2)? as u64,
                    samples: r.get::<_, i64>(3)? as u64,
                    bytes: r.get::<_, i64>(4)? as u64,
                    backlog: 0,
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        for r in &mut out {
            r.backlog = self
                .conn
                .query_row(
                    "SELECT count(*) FROM items i JOIN files f ON f.item_id = i.id \
                       AND f.role = 'video' AND (f.state = 'verified' OR f.state = 'sharded') \
                     WHERE i.dataset_id = ?1 AND i.state = 'active' AND NOT EXISTS ( \
                       SELECT 1 FROM samples sa JOIN shards sh ON sh.id = sa.shard_id \
                       WHERE sa.item_id = i.id AND sh.recipe_id = ?2 AND sh.state = 'live')",
                    rusqlite::params![dataset_id, r.recipe_id],
                    |row| row.get::<_, i64>(0),
                )
                .map_err(|e| self.sql(e))? as u64;
        }
        Ok(out)
    }

    pub fn recent_runs(&self, n: u32) -> Result<Vec<RunSummary>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, command, status, started_at, finished_at FROM runs \
                 ORDER BY started_at DESC, id DESC LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([n], |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    status: r.get(2)?,
                    started_at: rfc3339(r.get(3)?),
                    finished_at: r.get::<_, Option<i64>>(4)?.map(rfc3339),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }
}
