//! The reads a refresh makes of the catalog: its turn in the verification rotation,
//! a recipe by name, and the slice of live shards it re-hashes.
//!
//! Everything here only reads; the stages a refresh runs write through their own
//! modules.

use rusqlite::{OptionalExtension, params};

use crate::{Catalog, Result};

/// A live shard as a refresh re-hashes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveShard {
    pub id: i64,
    /// The shard's path, relative to the data root.
    pub path: String,
    pub sha256: String,
}

impl Catalog {
    /// The number of refreshes recorded that are no longer running.
    pub fn finished_refreshes(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM runs WHERE command = 'refresh' AND status <> 'running'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }

    /// The id of the latest recipe stored under `name`, if any.
    pub fn recipe_id_named(&self, name: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT id FROM recipes WHERE name = ?1 ORDER BY created_at DESC LIMIT 1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The live shards of a dataset whose id is `index` modulo `parts`, by id.
    pub fn live_shards_slice(
        &self,
        dataset_id: i64,
        parts: i64,
        index: i64,
    ) -> Result<Vec<LiveShard>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, path, sha256 FROM shards WHERE dataset_id = ?1 AND state = 'live' \
                 AND id % ?2 = ?3 ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        stmt.query_map(params![dataset_id, parts, index], |r| {
            Ok(LiveShard {
                id: r.get(0)?,
                path: r.get(1)?,
                sha256: r.get(2)?,
            })
        })
        .map_err(|e| self.sql(e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| self.sql(e))
    }
}
