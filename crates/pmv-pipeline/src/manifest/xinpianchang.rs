//! The xinpianchang multimodal set: JSON lines, or the upstream download tree.
//!
//! Owns both upstream layouts. `multimodal_data_info.json` holds one JSON object per
//! row with `mp4_id, mp4_download_url, mp4_time, mp4_background_image_url,
//! mp4_txt_brief, video_label`; a video listed under several labels has one row per
//! label (the caller merges them). The download tree is `<label>/<id>/<id>.txt` with the
//! same fields written as a Python dict repr (read by [`pmv_core::pydict`], never
//! evaluated), the label being the directory name, and `<id>.mp4` / `<id>.jpeg` beside
//! it when they were downloaded: those become the first, `local`, sources (inside the
//! allowed folders only, like every local path). A folder holding one item's
//! `<id>.{txt,mp4,jpeg}` directly (upstream's example) is read the same way, its label
//! from the `.txt` (`video_label`), or none.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::locator::{Allow, parse_location};
use super::{
    ClassTable, Ctx, ItemContent, ItemId, Parsed, ReadError, ReadOptions, ReadSummary, Refused,
    Rejection, Row, finish_labels,
};
use pmv_core::Locator;
use pmv_core::pydict::{self, PyValue};

/// The fields of one row, borrowed from the input where possible.
#[derive(Default)]
struct Fields<'a> {
    id: Option<Cow<'a, str>>,
    url: Option<Cow<'a, str>>,
    time: Option<Cow<'a, str>>,
    cover: Option<Cow<'a, str>>,
    brief: Option<Cow<'a, str>>,
    label: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct JsonRow<'a> {
    #[serde(borrow, deserialize_with = "str_or_int")]
    mp4_id: Cow<'a, str>,
    #[serde(borrow, default)]
    mp4_download_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mp4_time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mp4_background_image_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mp4_txt_brief: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    video_label: Option<Cow<'a, str>>,
}

/// `mp4_id` is a string upstream; a number is accepted as its decimal text.
fn str_or_int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a non-negative integer")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
    }
    d.deserialize_any(V)
}

pub(super) fn parse_json_line(text: &str, ctx: &mut Ctx<'_>) -> Result<Parsed, Refused> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(Refused::new(
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(_) => "a row must be a JSON object".to_string(),
                Err(e) => format!("invalid JSON: {e}"),
            },
        ));
    }
    let row: JsonRow<'_> = serde_json::from_str(text).map_err(|e| {
        let mut r = Refused::new(format!("invalid row: {e}"));
        // Keep the id of a row that names one, so the item is not taken for vanished.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
            && let Some(id) = v.get("mp4_id").and_then(|i| i.as_str())
        {
            r = r.with_id(id);
        }
        r
    })?;
    let fields = Fields {
        id: Some(row.mp4_id),
        url: row.mp4_download_url,
        time: row.mp4_time,
        cover: row.mp4_background_image_url,
        brief: row.mp4_txt_brief,
        label: row.video_label,
    };
    to_parsed(fields, ctx, LabelRule::Required, &[], &[])
}

/// Whether a row without `video_label` is an unlabeled item or a mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelRule {
    /// JSON lines and the upstream tree always name the label.
    Required,
    /// A single item's folder may hold an item without one.
    Optional,
}

/// Turns the fields of one row into a parsed row; `local_video` and `local_cover` are
/// files found beside a `.txt`, tried before the URLs.
fn to_parsed(
    f: Fields<'_>,
    ctx: &mut Ctx<'_>,
    label: LabelRule,
    local_video: &[Locator],
    local_cover: &[Locator],
) -> Result<Parsed, Refused> {
    let raw_id = f.id.as_deref().map(str::trim).unwrap_or("");
    if raw_id.is_empty() {
        return Err(Refused::new("mp4_id is missing or empty"));
    }
    let id = ItemId::parse(raw_id).map_err(|e| Refused::from(e).with_id(raw_id))?;
    let refuse = |reason: String| Refused::new(reason).with_id(id.as_str());
    let label_name = f.label.as_deref().map(str::trim).filter(|l| !l.is_empty());
    let labels = match (label_name, label) {
        (Some(name), _) => vec![ctx.classes.resolve_name(name).map_err(&refuse)?],
        (None, LabelRule::Optional) => vec![],
        (None, LabelRule::Required) => {
            return Err(refuse("video_label is missing or empty".into()));
        }
    };

    let mut video = local_video.to_vec();
    if let Some(url) = f.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        let loc = parse_location(url, Allow::Remote)
            .map_err(|e| refuse(format!("mp4_download_url: {e}")))?;
        if !video.contains(&loc) {
            video.push(loc);
        }
    }
    let mut cover = local_cover.to_vec();
    if let Some(url) = f.cover.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        let loc = parse_location(url, Allow::Remote)
            .map_err(|e| refuse(format!("mp4_background_image_url: {e}")))?;
        if !cover.contains(&loc) {
            cover.push(loc);
        }
    }
    let duration_s = match f.time.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(parse_duration(t).ok_or_else(|| {
            refuse(format!(
                "mp4_time '{}' is not M:SS, H:MM:SS or seconds",
                t.escape_debug()
            ))
        })?),
    };
    let text = f
        .brief
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    Ok(Parsed {
        labels: finish_labels(labels, true)?,
        split: None,
        content: ItemContent {
            text,
            duration_s,
            video,
            cover,
            sha256: None,
            size: None,
        },
        id,
    })
}

/// `M:SS`, `H:MM:SS` or plain seconds.
fn parse_duration(t: &str) -> Option<f64> {
    let parts: Vec<&str> = t.split(':').collect();
    let num = |s: &str| -> Option<f64> {
        let v: f64 = s.parse().ok()?;
        (v.is_finite() && v >= 0.0 && !s.starts_with(['+', '-'])).then_some(v)
    };
    match parts.as_slice() {
        [s] => num(s),
        [m, s] if num(s)? < 60.0 => Some(num(m)? * 60.0 + num(s)?),
        [h, m, s] if num(m)? < 60.0 && num(s)? < 60.0 => {
            Some(num(h)? * 3600.0 + num(m)? * 60.0 + num(s)?)
        }
        _ => None,
    }
}

/// Reads every `.txt` below `root` (sorted, hidden entries and symlinked directories
/// skipped, at most 8 levels deep) as one manifest.
pub(super) fn read_tree<E: std::error::Error + 'static>(
    root: &Path,
    opts: &ReadOptions,
    classes: &mut ClassTable,
    sink: &mut dyn FnMut(Result<Row, Rejection>) -> Result<(), E>,
    progress: &dyn Fn(u64),
) -> Result<ReadSummary, ReadError<E>> {
    let mut files = vec![];
    let mut videos = 0usize;
    collect_txt(root, 0, &mut files, &mut videos)
        .map_err(|(path, source)| ReadError::Io { path, source })?;
    if files.is_empty() {
        let found = match videos {
            0 => "no <id>.txt and no video".to_string(),
            n => format!("{n} video file(s) but no <id>.txt beside any of them"),
        };
        return Err(ReadError::Unusable {
            path: root.to_owned(),
            reason: format!(
                "{found}: each item needs its metadata file <id>.txt (a Python dict with mp4_id), \
                 either in the upstream tree <label>/<id>/<id>.{{txt,mp4,jpeg}} or in one item's \
                 folder <id>.{{txt,mp4,jpeg}}"
            ),
        });
    }
    read_txt_files(root, &files, opts, classes, sink, progress)
}

/// Collects the `.txt` files below `dir`, and counts the videos seen (for the error
/// when there is no `.txt`).
fn collect_txt(
    dir: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
    videos: &mut usize,
) -> Result<(), (PathBuf, std::io::Error)> {
    if depth > 8 {
        return Ok(());
    }
    let mut entries: Vec<_> = fs_err::read_dir(dir)
        .map_err(|e| (dir.to_owned(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| (dir.to_owned(), e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
        if kind.is_dir() {
            collect_txt(&path, depth + 1, out, videos)?;
        } else if kind.is_file() && super::has_extension(&path, "txt") {
            out.push(path);
        } else if kind.is_file() && super::has_extension(&path, "mp4") {
            *videos += 1;
        }
    }
    Ok(())
}

/// Reads `.txt` item files as one manifest whose path is `manifest`.
pub(super) fn read_txt_files<E: std::error::Error + 'static>(
    manifest: &Path,
    files: &[PathBuf],
    opts: &ReadOptions,
    classes: &mut ClassTable,
    sink: &mut dyn FnMut(Result<Row, Rejection>) -> Result<(), E>,
    progress: &dyn Fn(u64),
) -> Result<ReadSummary, ReadError<E>> {
    let mut ctx = Ctx {
        opts,
        classes,
        jsonl: None,
    };
    let mut tree_hash = Sha256::new();
    let mut summary = ReadSummary::default();
    for (ordinal, file) in files.iter().enumerate() {
        let line = ordinal as u64 + 1;
        let bytes = fs_err::read(file).map_err(|source| ReadError::Io {
            path: file.clone(),
            source,
        })?;
        let rel = file.strip_prefix(manifest).unwrap_or(file);
        tree_hash.update(rel.as_os_str().as_encoded_bytes());
        tree_hash.update(b"\0");
        tree_hash.update(Sha256::digest(&bytes));
        summary.bytes += bytes.len() as u64;
        summary.rows += 1;
        progress(bytes.len() as u64);
        let result = parse_txt(file, &bytes, &mut ctx);
        let item = match result {
            Ok(p) => {
                summary.accepted += 1;
                Ok(Row {
                    line,
                    file: Some(file.clone()),
                    split: opts.split.assign(p.split, &p.id),
                    id: p.id,
                    labels: p.labels,
                    content: p.content,
                })
            }
            Err(r) => {
                summary.rejected += 1;
                Err(Rejection {
                    file: file.clone(),
                    line: 1,
                    id: r.id,
                    reason: r.reason,
                })
            }
        };
        sink(item).map_err(ReadError::Sink)?;
    }
    summary.sha256 = hex::encode(tree_hash.finalize());
    Ok(summary)
}

fn parse_txt(file: &Path, bytes: &[u8], ctx: &mut Ctx<'_>) -> Result<Parsed, Refused> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Refused::new(format!("not valid UTF-8 (at byte {})", e.valid_up_to())))?;
    if text.trim().is_empty() {
        return Err(Refused::new("the file is empty"));
    }
    let value =
        pydict::parse(text).map_err(|e| Refused::new(format!("not a Python dict literal: {e}")))?;
    let PyValue::Dict(pairs) = value else {
        return Err(Refused::new(format!(
            "expected a dict, found a {}",
            value.type_name()
        )));
    };
    let mut f = Fields::default();
    for (key, value) in pairs {
        let PyValue::Str(key) = key else { continue };
        let slot = match key.as_str() {
            "mp4_id" => &mut f.id,
            "mp4_download_url" => &mut f.url,
            "mp4_time" => &mut f.time,
            "mp4_background_image_url" => &mut f.cover,
            "mp4_txt_brief" => &mut f.brief,
            "video_label" => &mut f.label,
            _ => continue,
        };
        *slot = match value {
            PyValue::Str(s) => Some(Cow::Owned(s)),
            PyValue::Int(i) if key == "mp4_id" && i >= 0 => Some(Cow::Owned(i.to_string())),
            PyValue::None => None,
            other => {
                return Err(Refused::new(format!(
                    "'{key}' is a {}, expected a str",
                    other.type_name()
                )));
            }
        };
    }
    // The upstream tree keeps the label in the directory name: <label>/<id>/<id>.txt.
    // Any other place is one item's own folder (upstream's example: <id>.{txt,mp4,jpeg}
    // side by side), whose label can only come from the .txt.
    let dir = file.parent().unwrap_or(Path::new("/"));
    let upstream = dir.file_name().is_some() && dir.file_name() == file.file_stem();
    let label_from_dir = f.label.is_none() && upstream;
    if label_from_dir {
        match dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
        {
            Some(l) => f.label = Some(Cow::Owned(l.to_owned())),
            None => {
                return Err(Refused::new(
                    "no video_label, and the <label>/<id>/<id>.txt tree has no label folder",
                ));
            }
        }
    }
    let rule = if upstream {
        LabelRule::Required
    } else {
        LabelRule::Optional
    };
    // Files downloaded beside the .txt are the first sources.
    let (mut local_video, mut local_cover) = (vec![], vec![]);
    if let Some(id) = f.id.as_deref().map(str::trim)
        && ItemId::parse(id).is_ok()
    {
        let allow = Allow::RemoteOrLocal {
            base: dir,
            roots: &ctx.opts.roots,
        };
        let local = |name: String| -> Result<Option<Locator>, Refused> {
            let p = dir.join(&name);
            if std::fs::symlink_metadata(&p).is_err() {
                return Ok(None);
            }
            let text = p.to_str().ok_or_else(|| {
                Refused::new(format!("{name}: the path is not UTF-8")).with_id(id)
            })?;
            parse_location(text, allow)
                .map(Some)
                .map_err(|e| Refused::new(format!("{name}: {e}")).with_id(id))
        };
        local_video.extend(local(format!("{id}.mp4"))?);
        let cover = match local(format!("{id}.jpeg"))? {
            Some(c) => Some(c),
            None => local(format!("{id}.jpg"))?,
        };
        local_cover.extend(cover);
    }
    to_parsed(f, ctx, rule, &local_video, &local_cover).map_err(|mut r| {
        if label_from_dir && r.reason.starts_with("unknown class name") {
            r.reason.push_str(" (taken from the directory name)");
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0:15"), Some(15.0));
        assert_eq!(parse_duration("2:05"), Some(125.0));
        assert_eq!(parse_duration("1:00:01"), Some(3601.0));
        assert_eq!(parse_duration("12.5"), Some(12.5));
        assert_eq!(parse_duration("1:75"), None);
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("a:b"), None);
        assert_eq!(parse_duration("1:2:3:4"), None);
    }
}
