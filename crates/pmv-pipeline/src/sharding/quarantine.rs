//! Quarantine: where a stored file that is not a decodable video, or is refused by the
//! media layer, goes.
//!
//! The file is moved (renamed, never copied or deleted) to
//! `quarantine/<dataset>/<file-name>` with `<file-name>.reason.txt` beside it, and the
//! catalog marks it `corrupt` (error class `corrupt`, the reason as message, the new
//! path); its source rank is kept so the next fetch tries the next source. A name already
//! taken in quarantine gets `.1`, `.2`, ... so earlier evidence is never overwritten.
//! This module never decodes and never removes anything.

use std::io::Write;
use std::path::{Path, PathBuf};

use pmv_catalog::{Catalog, CatalogError};
use pmv_core::root::DataRoot;
use pmv_core::util::{now_unix, rfc3339, sync_dir};

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("cannot quarantine {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What is known about the file being quarantined.
pub struct Quarantined<'a> {
    pub dataset: &'a str,
    pub item_id: i64,
    pub item_key: &'a str,
    /// The file's path relative to the data root.
    pub path: &'a str,
    pub sha256: &'a str,
    pub reason: &'a str,
}

/// Moves the file into quarantine, writes its reason and marks it `corrupt`. Returns
/// the new path, relative to the root.
pub fn quarantine(
    root: &DataRoot,
    catalog: &Catalog,
    q: &Quarantined<'_>,
) -> Result<String, QuarantineError> {
    let src = root.path().join(q.path);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| QuarantineError::Io { path, source }
    };
    let dir = root.quarantine_dir().join(q.dataset);
    fs_err::create_dir_all(&dir).map_err(io(&dir))?;
    let name = Path::new(q.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "video".into());
    let mut dest_name = name.clone();
    let mut n = 0;
    while dir.join(&dest_name).exists() || dir.join(format!("{dest_name}.reason.txt")).exists() {
        n += 1;
        dest_name = format!("{name}.{n}");
    }
    let dest = dir.join(&dest_name);
    let reason_path = dir.join(format!("{dest_name}.reason.txt"));
    let text = format!(
        "item: {}\ndataset: {}\nfile: {}\nsha256: {}\nquarantined: {}\nreason: {}\n",
        q.item_key,
        q.dataset,
        q.path,
        q.sha256,
        rfc3339(now_unix()),
        q.reason
    );
    {
        let mut f = fs_err::File::create(&reason_path).map_err(io(&reason_path))?;
        f.write_all(text.as_bytes()).map_err(io(&reason_path))?;
        f.sync_all().map_err(io(&reason_path))?;
    }
    fs_err::rename(&src, &dest).map_err(io(&src))?;
    sync_dir(&dir).map_err(io(&dir))?;
    if let Some(parent) = src.parent() {
        sync_dir(parent).map_err(io(parent))?;
    }
    let rel = format!("quarantine/{}/{dest_name}", q.dataset);
    catalog.mark_corrupt(q.item_id, pmv_core::Role::Video, q.reason, &rel)?;
    tracing::warn!(item = q.item_key, file = q.path, to = %rel, reason = q.reason, "quarantined");
    Ok(rel)
}
