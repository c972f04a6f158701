//! Class taxonomies: reading class files and resolving manifest labels to class ids.
//!
//! Owns the class-file formats (`name,id` and `id,name` CSV, one name per line, JSON),
//! the built-in taxonomies of PMV-400 and xinpianchang, and the table that maps label
//! names and numbers to ids while a manifest is read. Class ids, once in a catalog,
//! never change meaning: a table only ever grows.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::Format;
use super::lines::{LineReader, LineText};

/// PMV-400's taxonomy as published upstream (`class_name_mapping.csv`).
pub const PMV400_CLASSES: &str =
    include_str!("../../../../manifests/pmv400/class_name_mapping.csv");
/// xinpianchang's 31 labels, ids by the upstream rule (names sorted bytewise).
pub const XINPIANCHANG_CLASSES: &str =
    include_str!("../../../../manifests/xinpianchang/classes.csv");

#[derive(Debug, thiserror::Error)]
pub enum ClassFileError {
    #[error("cannot read class file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// The built-in taxonomy of a format, if it has one.
pub fn builtin(format: Format) -> Option<Vec<(u32, String)>> {
    let (text, name) = match format {
        Format::Pmv400 => (PMV400_CLASSES, "built-in PMV-400 classes"),
        Format::Xinpianchang => (XINPIANCHANG_CLASSES, "built-in xinpianchang classes"),
        Format::Videomae | Format::Jsonl => return None,
    };
    Some(
        parse_class_text(text.as_bytes(), Path::new(name), false)
            .expect("the built-in class tables are valid"),
    )
}

/// Reads a class file. `.json`: an array of names (ids in order) or an object
/// `{name: id}`. `.txt`: one name per line, ids in order. Anything else is CSV with a
/// `name,id` or `id,name` pair per line (a header line is skipped); the name may hold
/// commas when the id is the last field. Names are trimmed (13 PMV-400 names carry a
/// trailing space upstream).
pub fn read_classes_file(path: &Path) -> Result<Vec<(u32, String)>, ClassFileError> {
    let bytes = fs_err::read(path).map_err(|source| ClassFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "json" {
        return parse_class_json(&bytes, path);
    }
    parse_class_text(&bytes, path, ext == "txt")
}

fn parse_class_json(bytes: &[u8], path: &Path) -> Result<Vec<(u32, String)>, ClassFileError> {
    let err = |reason: String| ClassFileError::File {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let mut out = vec![];
    match value {
        serde_json::Value::Array(names) => {
            for (i, n) in names.into_iter().enumerate() {
                let name = n
                    .as_str()
                    .ok_or_else(|| err(format!("entry {i} is not a string")))?;
                out.push((i as u32, name.to_owned()));
            }
        }
        serde_json::Value::Object(map) => {
            for (name, id) in map {
                let id = id
                    .as_u64()
                    .filter(|&v| v <= u32::MAX as u64)
                    .ok_or_else(|| err(format!("id of '{name}' is not a non-negative integer")))?;
                out.push((id as u32, name));
            }
        }
        _ => {
            return Err(err(
                "expected an array of names or an object {name: id}".into()
            ));
        }
    }
    check_table(out, path, |_| 0)
}

fn parse_class_text(
    bytes: &[u8],
    path: &Path,
    names_only: bool,
) -> Result<Vec<(u32, String)>, ClassFileError> {
    let mut reader = LineReader::new(bytes);
    let mut out = vec![];
    let mut lines = HashMap::new();
    let line_err = |line: u64, reason: String| ClassFileError::Line {
        path: path.to_owned(),
        line,
        reason,
    };
    while let Some(line) = reader.next_line().map_err(|source| ClassFileError::Io {
        path: path.to_owned(),
        source,
    })? {
        let text = match line.text {
            LineText::Text(t) => t,
            LineText::NotUtf8 { column, .. } => {
                return Err(line_err(line.number, format!("not UTF-8 at byte {column}")));
            }
            LineText::TooLong { bytes } => {
                return Err(line_err(
                    line.number,
                    format!("line of {bytes} bytes is too long"),
                ));
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let (id, name) = if names_only {
            (out.len() as u32, text)
        } else {
            let first = text.split_once(',');
            let last = text.rsplit_once(',');
            let parse_id = |s: &str| s.trim().parse::<u32>().ok();
            match (last.and_then(|(n, i)| parse_id(i).map(|i| (i, n))), first) {
                (Some(pair), _) => pair,
                (None, Some((i, n))) if parse_id(i).is_some() => (parse_id(i).unwrap(), n),
                _ if line.number == 1 => continue, // a header such as `class_name,class_id`
                _ => {
                    return Err(line_err(
                        line.number,
                        "expected 'name,id' or 'id,name' with an integer id".into(),
                    ));
                }
            }
        };
        lines.insert(id, line.number);
        out.push((id, name.to_owned()));
    }
    check_table(out, path, |id| lines.get(&id).copied().unwrap_or(0))
}

/// Trims names and rejects empty or control-character names and duplicate ids or names.
fn check_table(
    entries: Vec<(u32, String)>,
    path: &Path,
    line_of: impl Fn(u32) -> u64,
) -> Result<Vec<(u32, String)>, ClassFileError> {
    if entries.is_empty() {
        return Err(ClassFileError::File {
            path: path.to_owned(),
            reason: "no classes".into(),
        });
    }
    let mut by_id = BTreeMap::new();
    let mut by_name = HashMap::new();
    for (id, name) in entries {
        let name = name.trim().to_owned();
        let err = |reason: String| ClassFileError::Line {
            path: path.to_owned(),
            line: line_of(id),
            reason,
        };
        if name.is_empty() {
            return Err(err(format!("class {id} has an empty name")));
        }
        if name.chars().any(char::is_control) {
            return Err(err(format!(
                "class {id} has a control character in its name"
            )));
        }
        if let Some(other) = by_name.insert(name.clone(), id) {
            return Err(err(format!(
                "class name '{name}' is used by ids {other} and {id}"
            )));
        }
        if let Some(other) = by_id.insert(id, name.clone()) {
            return Err(err(format!(
                "class id {id} is given to '{other}' and '{name}'"
            )));
        }
    }
    Ok(by_id.into_iter().collect())
}

/// Resolves labels to class ids while a manifest is read.
///
/// A *fixed* table (from a class file, a built-in taxonomy or a dataset that already
/// has classes and was given no new file) rejects unknown labels. An *open* table
/// (a dataset without a taxonomy) creates classes as labels appear: a name gets the
/// next free id, a number `n` becomes class `n` named `"n"`.
#[derive(Debug, Clone)]
pub struct ClassTable {
    by_id: BTreeMap<u32, String>,
    by_name: HashMap<String, u32>,
    open: bool,
    added: Vec<u32>,
}

impl ClassTable {
    pub fn fixed(entries: Vec<(u32, String)>) -> ClassTable {
        Self::build(entries, false)
    }

    pub fn open(existing: Vec<(u32, String)>) -> ClassTable {
        Self::build(existing, true)
    }

    fn build(entries: Vec<(u32, String)>, open: bool) -> ClassTable {
        let by_name = entries.iter().map(|(i, n)| (n.clone(), *i)).collect();
        ClassTable {
            by_id: entries.into_iter().collect(),
            by_name,
            open,
            added: vec![],
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    pub fn entries(&self) -> impl Iterator<Item = (u32, &str)> {
        self.by_id.iter().map(|(i, n)| (*i, n.as_str()))
    }

    /// Ids created while reading (open tables only).
    pub fn added(&self) -> &[u32] {
        &self.added
    }

    /// A label given as a number.
    pub fn resolve_id(&mut self, id: i64) -> Result<u32, String> {
        let Ok(id) = u32::try_from(id) else {
            return Err(format!("label {id} is not a valid class id"));
        };
        if self.by_id.contains_key(&id) {
            return Ok(id);
        }
        if self.open {
            let name = id.to_string();
            if self.by_name.contains_key(&name) {
                return Err(format!(
                    "label {id} is not a class id, and the name '{name}' belongs to another class"
                ));
            }
            self.insert(id, name);
            return Ok(id);
        }
        Err(
            match (self.by_id.keys().next(), self.by_id.keys().next_back()) {
                (Some(lo), Some(hi)) if hi - lo + 1 == self.by_id.len() as u32 => {
                    format!("label {id} is out of range: classes are {lo}..{hi}")
                }
                _ => format!("label {id} is not a known class id"),
            },
        )
    }

    /// A label given as a name (trimmed before lookup).
    pub fn resolve_name(&mut self, name: &str) -> Result<u32, String> {
        let name = name.trim();
        if let Some(&id) = self.by_name.get(name) {
            return Ok(id);
        }
        if name.is_empty() {
            return Err("label is empty".into());
        }
        if self.open {
            if name.chars().any(char::is_control) {
                return Err("label contains a control character".into());
            }
            let id = self.by_id.keys().next_back().map_or(0, |m| m + 1);
            self.insert(id, name.to_owned());
            return Ok(id);
        }
        Err(format!("unknown class name '{}'", name.escape_debug()))
    }

    fn insert(&mut self, id: u32, name: String) {
        self.by_name.insert(name.clone(), id);
        self.by_id.insert(id, name);
        self.added.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_taxonomies_match_upstream() {
        let pmv = builtin(Format::Pmv400).unwrap();
        assert_eq!(pmv.len(), 400);
        assert!(pmv.iter().enumerate().all(|(i, (id, _))| *id == i as u32));
        assert_eq!(pmv[4].1, "playing flute", "trailing space trimmed");
        assert_eq!(pmv.iter().filter(|(_, n)| n.contains('/')).count(), 7);
        let x = builtin(Format::Xinpianchang).unwrap();
        assert_eq!(x.len(), 31);
        let mut sorted: Vec<_> = x.iter().map(|(_, n)| n.clone()).collect();
        sorted.sort();
        assert_eq!(sorted, x.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());
        assert_eq!(x[0].1, "360VR");
        assert_eq!(x[30].1, "stars");
    }

    #[test]
    fn csv_layouts_and_headers() {
        let t = parse_class_text(
            b"id,name\n0,abseiling\n1,air drumming\n",
            Path::new("k.csv"),
            false,
        )
        .unwrap();
        assert_eq!(t, vec![(0, "abseiling".into()), (1, "air drumming".into())]);
        let t = parse_class_text(b"a, b,1\nc,0\n", Path::new("p.csv"), false).unwrap();
        assert_eq!(t, vec![(0, "c".into()), (1, "a, b".into())]);
        let t = parse_class_text(b"x\ny\n\n", Path::new("n.txt"), true).unwrap();
        assert_eq!(t, vec![(0, "x".into()), (1, "y".into())]);
    }

    #[test]
    fn bad_class_files_name_the_line() {
        let e = parse_class_text(b"a,0\nb,0\n", Path::new("d.csv"), false).unwrap_err();
        assert_eq!(e.to_string(), "d.csv:2: class id 0 is given to 'a' and 'b'");
        let e = parse_class_text(b"a,0\na ,1\n", Path::new("d.csv"), false).unwrap_err();
        assert!(e.to_string().contains("used by ids 0 and 1"), "{e}");
        let e = parse_class_text(b"a,0\nnonsense\n", Path::new("d.csv"), false).unwrap_err();
        assert!(e.to_string().starts_with("d.csv:2:"), "{e}");
        assert!(parse_class_text(b"", Path::new("e.csv"), false).is_err());
        let e = parse_class_json(b"{\"a\": -1}", Path::new("c.json")).unwrap_err();
        assert!(e.to_string().contains("non-negative"), "{e}");
    }

    #[test]
    fn fixed_tables_reject_and_open_tables_grow() {
        let mut f = ClassTable::fixed(vec![(0, "a".into()), (1, "b".into())]);
        assert_eq!(f.resolve_name(" b ").unwrap(), 1);
        assert_eq!(
            f.resolve_id(2).unwrap_err(),
            "label 2 is out of range: classes are 0..1"
        );
        assert!(
            f.resolve_name("c")
                .unwrap_err()
                .contains("unknown class name 'c'")
        );
        assert!(f.resolve_id(-1).is_err());
        let mut o = ClassTable::open(vec![(0, "a".into())]);
        assert_eq!(o.resolve_name("z").unwrap(), 1);
        assert_eq!(o.resolve_id(7).unwrap(), 7);
        assert_eq!(o.name(7), Some("7"));
        assert_eq!(o.resolve_name("y").unwrap(), 8);
        assert_eq!(o.added(), &[1, 7, 8]);
    }
}
