//! What fetch reads to plan its work: the active items of a dataset with their
//! candidate sources and the rows of their video and cover files, page by page, and
//! the items' sources alone for an offline walk over them.
//!
//! Sources are handed on as the JSON the catalog stores; reading them, and deciding
//! which files are due, is fetch's. It only reads the catalog.

use rusqlite::params;

use crate::{Catalog, Result};

/// Every column of a file's row that planning looks at; all `None` when the file has
/// no row yet.
#[derive(Debug, Clone, Default)]
pub struct FileRecord {
    pub state: Option<String>,
    pub source_rank: Option<i64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// While downloading: the size the server announced.
    pub size: Option<i64>,
    pub path: Option<String>,
    pub next_retry_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub error_class: Option<String>,
}

impl FileRecord {
    /// Whether a file under the final name may be a complete download whose record
    /// was lost (the run was killed between renaming it and recording it).
    pub fn may_adopt(&self) -> bool {
        matches!(
            self.state.as_deref(),
            None | Some("pending") | Some("downloading") | Some("downloaded")
        )
    }
}

/// An active item as planning reads it.
#[derive(Debug, Clone)]
pub struct PlanItem {
    pub id: i64,
    pub key: String,
    /// The video's candidate sources (JSON list of locators), if any.
    pub video_sources: Option<String>,
    /// The cover's candidate sources (JSON list of locators), if any.
    pub cover_sources: Option<String>,
    /// The video's size the manifest gives, if any.
    pub expected_size: Option<i64>,
    /// The video's SHA-256 the manifest gives, if any.
    pub expected_sha256: Option<String>,
    /// The rows of the video's and the cover's file, in that order.
    pub files: [FileRecord; 2],
}

const PLAN_PAGE: &str = "SELECT i.id, i.key, i.video_sources, i.cover_sources, i.expected_size, \
       i.expected_sha256, \
       v.state, v.source_rank, v.etag, v.last_modified, v.size, v.path, v.next_retry_at, v.updated_at, \
       v.error_class, \
       c.state, c.source_rank, c.etag, c.last_modified, c.size, c.path, c.next_retry_at, c.updated_at, \
       c.error_class \
     FROM items i \
     LEFT JOIN files v ON v.item_id = i.id AND v.role = 'video' \
     LEFT JOIN files c ON c.item_id = i.id AND c.role = 'cover' \
     WHERE i.dataset_id = ?1 AND i.state = 'active' AND i.id > ?2 \
       AND (?3 IS NULL OR EXISTS (SELECT 1 FROM memberships m WHERE m.item_id = i.id AND m.split = ?3)) \
     ORDER BY i.id LIMIT ?4";

impl Catalog {
    /// At most `limit` active items of a dataset whose id is above `after` (and, with
    /// `split`, that are members of it), in id order, with their files' rows.
    pub fn plan_page(
        &self,
        dataset_id: i64,
        after: i64,
        split: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PlanItem>> {
        let mut stmt = self
            .conn
            .prepare_cached(PLAN_PAGE)
            .map_err(|e| self.sql(e))?;
        let record = |r: &rusqlite::Row<'_>, at: usize| -> rusqlite::Result<FileRecord> {
            Ok(FileRecord {
                state: r.get(at)?,
                source_rank: r.get(at + 1)?,
                etag: r.get(at + 2)?,
                last_modified: r.get(at + 3)?,
                size: r.get(at + 4)?,
                path: r.get(at + 5)?,
                next_retry_at: r.get(at + 6)?,
                updated_at: r.get(at + 7)?,
                error_class: r.get(at + 8)?,
            })
        };
        let rows = stmt
            .query_map(params![dataset_id, after, split, limit], |r| {
                Ok(PlanItem {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    video_sources: r.get(2)?,
                    cover_sources: r.get(3)?,
                    expected_size: r.get(4)?,
                    expected_sha256: r.get(5)?,
                    files: [record(r, 6)?, record(r, 15)?],
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    /// Calls `f` with the key and the video's and cover's candidate sources (JSON) of
    /// every active item of a dataset, in id order, at most `limit` items; stops at
    /// the first error `f` returns. Returns the number of items seen.
    pub fn for_each_item_sources(
        &self,
        dataset_id: i64,
        limit: Option<u64>,
        mut f: impl FnMut(String, Option<String>, Option<String>) -> Result<()>,
    ) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT key, video_sources, cover_sources FROM items \
                 WHERE dataset_id = ?1 AND state = 'active' ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt
            .query(params![dataset_id, limit.map_or(-1, |l| l as i64)])
            .map_err(|e| self.sql(e))?;
        let mut items = 0;
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            items += 1;
            let key: String = r.get(0).map_err(|e| self.sql(e))?;
            let video: Option<String> = r.get(1).map_err(|e| self.sql(e))?;
            let cover: Option<String> = r.get(2).map_err(|e| self.sql(e))?;
            f(key, video, cover)?;
        }
        Ok(items)
    }
}
