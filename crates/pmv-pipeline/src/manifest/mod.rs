//! Manifest formats: turn the link lists people publish into validated rows.
//!
//! This module owns reading every supported input format (`pmv400`, `xinpianchang`,
//! `videomae`, `jsonl`), the per-row validation rules (ids, labels, URLs, splits) and
//! the exact wording of each rejection (`file:line: reason`). It streams its input and
//! keeps at most one row in memory. It never writes anything: rows go to a caller's
//! sink, which decides what is stored.

pub mod classes;
mod jsonl;
mod lines;
mod links;
mod locator;
mod pmv400;
mod videomae;
mod xinpianchang;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use classes::{ClassFileError, ClassTable};
pub use lines::MAX_LINE_BYTES;
pub use pmv_core::ids::{IdError, ItemId, MAX_ID_BYTES, file_stem};
pub use pmv400::is_class_name_list;

pub use links::{Links, UrlTemplate, read_links_file};
pub use locator::{Allow, parse_location};
pub use pmv_core::pydict;
pub use pmv_core::split::{Split, SplitRatios};
pub use pmv_core::{Format, Locator};

use crate::source::local::LocalRoots;
use lines::{LineReader, LineText};

/// Everything a manifest says about an item apart from its id, labels and split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Candidate sources of the video, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub video: Vec<Locator>,
    /// Candidate sources of the cover image, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cover: Vec<Locator>,
    /// Expected SHA-256 (lower-case hex) of the video, when the manifest knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Expected size in bytes of the video, when the manifest knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One accepted manifest row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line number, or for a directory input the ordinal of its `.txt` file.
    pub line: u64,
    /// The file the row came from, when it is not the manifest path itself.
    pub file: Option<PathBuf>,
    pub id: ItemId,
    pub split: Split,
    /// Class ids, ascending, without duplicates; empty for an unlabeled item.
    pub labels: Vec<u32>,
    pub content: ItemContent,
}

/// One rejected manifest row: reported as `file:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub file: PathBuf,
    /// 1-based line, or 0 when the whole file is rejected.
    pub line: u64,
    /// The row's id, when it could be read; such an item is not treated as vanished.
    pub id: Option<String>,
    pub reason: String,
}

impl fmt::Display for Rejection {
    /// `file:line: reason`, or `file: reason` when the whole file is rejected (line 0).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

/// How the rows of one manifest get their split.
#[derive(Debug, Clone)]
pub struct SplitRule {
    /// `--split`, or the split the file name names.
    pub fixed: Option<Split>,
    /// For rows with neither their own split nor a fixed one.
    pub ratios: SplitRatios,
}

impl SplitRule {
    fn assign(&self, own: Option<Split>, id: &ItemId) -> Split {
        own.or_else(|| self.fixed.clone())
            .unwrap_or_else(|| self.ratios.split_of(id.as_str()).clone())
    }
}

/// What the reader needs besides the file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub format: Format,
    pub split: SplitRule,
    pub multi_label: bool,
    /// Relative local paths in the manifest are taken from here (absolute).
    pub base_dir: PathBuf,
    /// The folders local paths may lie in (see [`LocalRoots`]).
    pub roots: LocalRoots,
}

/// What reading one manifest found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadSummary {
    /// SHA-256 of the file (for a directory: of its sorted `.txt` paths and their hashes).
    pub sha256: String,
    pub bytes: u64,
    /// Non-blank rows seen, accepted or rejected.
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub blank_lines: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError<E: std::error::Error + 'static> {
    #[error("cannot read manifest {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error(transparent)]
    Sink(E),
}

impl ReadError<std::convert::Infallible> {
    /// The same error, for a caller whose sink can fail.
    pub fn widen<E: std::error::Error + 'static>(self) -> ReadError<E> {
        match self {
            ReadError::Io { path, source } => ReadError::Io { path, source },
            ReadError::Unusable { path, reason } => ReadError::Unusable { path, reason },
            ReadError::Sink(never) => match never {},
        }
    }
}

/// Result of parsing one row's text, before its line number and split are attached.
struct Parsed {
    id: ItemId,
    split: Option<Split>,
    labels: Vec<u32>,
    content: ItemContent,
}

/// Why a row's text was refused, and its id when known.
struct Refused {
    id: Option<String>,
    reason: String,
}

impl Refused {
    fn new(reason: impl Into<String>) -> Refused {
        Refused {
            id: None,
            reason: reason.into(),
        }
    }

    fn with_id(mut self, id: &str) -> Refused {
        self.id = Some(id.to_owned());
        self
    }
}

impl From<IdError> for Refused {
    fn from(e: IdError) -> Refused {
        Refused::new(e.to_string())
    }
}

/// Parsing context handed to the per-format line parsers.
struct Ctx<'a> {
    opts: &'a ReadOptions,
    classes: &'a mut ClassTable,
    jsonl: Option<&'a jsonl::Validator>,
}

/// Streams every row of one manifest to `sink`, in file order; `progress` hears of
/// bytes consumed from time to time.
///
/// A file that is empty, or holds only blank lines, is an error: treating it as a
/// manifest with no rows would mark every item it used to list as removed.
pub fn read<E: std::error::Error + 'static>(
    path: &Path,
    opts: &ReadOptions,
    classes: &mut ClassTable,
    sink: &mut dyn FnMut(Result<Row, Rejection>) -> Result<(), E>,
    progress: &dyn Fn(u64),
) -> Result<ReadSummary, ReadError<E>> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs_err::metadata(path).map_err(io)?;
    if meta.is_dir() {
        if opts.format != Format::Xinpianchang {
            return Err(ReadError::Unusable {
                path: path.to_owned(),
                reason:
                    "is a directory; only the xinpianchang format reads a directory (of .txt files)"
                        .to_string(),
            });
        }
        return xinpianchang::read_tree(path, opts, classes, sink, progress);
    }
    if opts.format == Format::Xinpianchang && has_extension(path, "txt") {
        return xinpianchang::read_txt_files(
            path,
            &[path.to_owned()],
            opts,
            classes,
            sink,
            progress,
        );
    }
    // The SHA-256 of the file is computed on another core while this one parses. Both
    // read the same bytes unless the file changes meanwhile, which its size and
    // modification time then tell.
    let stamp = FileStamp::of(&meta);
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| hash_manifest(path, stamp));
        let parsed = read_lines(path, opts, classes, sink, progress);
        let hashed = hashing.join().expect("the hashing thread does not panic");
        let mut summary = parsed?;
        summary.sha256 = hashed.map_err(ReadError::widen)?;
        Ok(summary)
    })
}

/// The size and modification time of a manifest file when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// The SHA-256 of a manifest that was read with `stamp`; an error if it changed since.
fn hash_manifest(
    path: &Path,
    stamp: FileStamp,
) -> Result<String, ReadError<std::convert::Infallible>> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let (sha256, len) = pmv_core::util::sha256_file(path).map_err(io)?;
    let after = FileStamp::of(&fs_err::metadata(path).map_err(io)?);
    if after != stamp || len != stamp.len {
        return Err(ReadError::Unusable {
            path: path.to_owned(),
            reason: "the manifest changed while it was read; ingest it again".into(),
        });
    }
    Ok(sha256)
}

/// Parses a line-based manifest; the summary's hash is left to the caller.
fn read_lines<E: std::error::Error + 'static>(
    path: &Path,
    opts: &ReadOptions,
    classes: &mut ClassTable,
    sink: &mut dyn FnMut(Result<Row, Rejection>) -> Result<(), E>,
    progress: &dyn Fn(u64),
) -> Result<ReadSummary, ReadError<E>> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let file = fs_err::File::open(path).map_err(io)?;
    let mut summary = ReadSummary::default();
    let mut parser = LineParser::new(path, opts, classes);
    let mut reader = LineReader::unhashed(file);
    let mut reported = 0u64;
    while let Some(line) = reader.next_line().map_err(io)? {
        if line.number % 16384 == 0 {
            progress(line.end_offset - reported);
            reported = line.end_offset;
        }
        let parsed = parser.parse(line.number, line.text, line.terminated);
        if let Some(result) = summary.count(parsed) {
            sink(result).map_err(ReadError::Sink)?;
        }
    }
    progress(reader.bytes_read() - reported);
    summary.bytes = reader.finish().1;
    require_rows(path, summary)
}

/// A manifest without rows is refused: taking it for a list of nothing would mark every
/// item it used to list as removed.
fn require_rows<E: std::error::Error + 'static>(
    path: &Path,
    summary: ReadSummary,
) -> Result<ReadSummary, ReadError<E>> {
    if summary.rows > 0 {
        return Ok(summary);
    }
    Err(ReadError::Unusable {
        path: path.to_owned(),
        reason: if summary.bytes == 0 {
            "the manifest is empty".into()
        } else {
            "the manifest has no rows (only blank lines)".into()
        },
    })
}

/// One line's outcome.
enum LineOutcome {
    Blank,
    Row(Row),
    Rejected(Rejection),
}

impl ReadSummary {
    /// Counts one line; returns what goes to the sink.
    fn count(&mut self, outcome: LineOutcome) -> Option<Result<Row, Rejection>> {
        match outcome {
            LineOutcome::Blank => {
                self.blank_lines += 1;
                None
            }
            LineOutcome::Row(row) => {
                self.rows += 1;
                self.accepted += 1;
                Some(Ok(row))
            }
            LineOutcome::Rejected(r) => {
                self.rows += 1;
                self.rejected += 1;
                Some(Err(r))
            }
        }
    }
}

/// Turns one line of a line-based manifest into a row or a rejection.
struct LineParser<'a> {
    path: &'a Path,
    opts: &'a ReadOptions,
    classes: &'a mut ClassTable,
    jsonl: Option<jsonl::Validator>,
}

impl<'a> LineParser<'a> {
    fn new(path: &'a Path, opts: &'a ReadOptions, classes: &'a mut ClassTable) -> Self {
        LineParser {
            path,
            opts,
            classes,
            jsonl: (opts.format == Format::Jsonl).then(jsonl::Validator::new),
        }
    }

    fn parse(&mut self, number: u64, text: LineText<'_>, terminated: bool) -> LineOutcome {
        let reject = |reason: String, id: Option<String>| {
            LineOutcome::Rejected(Rejection {
                file: self.path.to_owned(),
                line: number,
                id,
                reason,
            })
        };
        let text = match text {
            LineText::Text(t) if t.trim().is_empty() => return LineOutcome::Blank,
            LineText::Text(t) => t,
            LineText::NotUtf8 { column, byte } => {
                return reject(
                    format!("not valid UTF-8 (byte {byte:#04x} at byte {column} of the line)"),
                    None,
                );
            }
            LineText::TooLong { bytes } => {
                return reject(
                    format!("line of {bytes} bytes is longer than {MAX_LINE_BYTES}"),
                    None,
                );
            }
        };
        let mut ctx = Ctx {
            opts: self.opts,
            classes: self.classes,
            jsonl: self.jsonl.as_ref(),
        };
        let parsed = match self.opts.format {
            Format::Pmv400 => pmv400::parse_line(text, &mut ctx),
            Format::Videomae => videomae::parse_line(text, &mut ctx),
            Format::Jsonl => jsonl::parse_line(text, &mut ctx),
            Format::Xinpianchang => xinpianchang::parse_json_line(text, &mut ctx),
        };
        match parsed {
            Ok(p) => LineOutcome::Row(Row {
                line: number,
                file: None,
                split: self.opts.split.assign(p.split, &p.id),
                id: p.id,
                labels: p.labels,
                content: p.content,
            }),
            Err(r) => {
                let mut reason = r.reason;
                if !terminated {
                    reason.push_str(" (the last line has no line end: is the file truncated?)");
                }
                reject(reason, r.id)
            }
        }
    }
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Sorts and deduplicates labels; refuses several in a single-label dataset.
fn finish_labels(mut labels: Vec<u32>, multi_label: bool) -> Result<Vec<u32>, Refused> {
    labels.sort_unstable();
    labels.dedup();
    if labels.len() > 1 && !multi_label {
        return Err(Refused::new(format!(
            "{} labels given, but the dataset is single-label (create it with --multi-label)",
            labels.len()
        )));
    }
    Ok(labels)
}

/// The id of an item named by a path or URL: its last segment without the extension.
fn id_from_location(raw: &str) -> &str {
    let without_query = raw.split(['?', '#']).next().unwrap_or(raw);
    let last = without_query
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(without_query);
    match last.rfind('.') {
        Some(dot) if dot > 0 => &last[..dot],
        _ => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_last_segment() {
        assert_eq!(
            id_from_location("/k400/train/abseiling/-3B32lodo2M_000059_000069.mp4"),
            "-3B32lodo2M_000059_000069"
        );
        assert_eq!(id_from_location("https://h/v/abc.webm?sig=1"), "abc");
        assert_eq!(id_from_location("relative/clip"), "clip");
        assert_eq!(id_from_location(".hidden"), ".hidden");
    }
}
