//! TensorBoard event files of a run: `<run>/tb/events.out.tfevents.<unix secs>.<host>`,
//! one event per `metrics.jsonl` record, one scalar per number in it.
//!
//! Owns the record framing (TFRecord: length, masked CRC-32C of the length, data,
//! masked CRC-32C of the data), the few `Event`/`Summary` protobuf fields it writes and
//! reads back, the tag of each number (`<kind>/<field>`, `val/ema/<field>` for the moving
//! average), and cutting a resumed run's earlier files back to its checkpoint. It never
//! decides what a record says or when one is written (`records` hands each one over).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::TrainError;

/// `Event.file_version` of the first event of a file.
const FILE_VERSION: &str = "brain.Event:2";

/// The folder of the event files inside a run directory.
pub(super) const DIR: &str = "tb";

/// Appends events to one new file in `<run>/tb/`.
pub(super) struct EventWriter {
    path: PathBuf,
    file: fs_err::File,
}

impl EventWriter {
    /// Starts a new event file in `dir` (a name taken within the same second gets a
    /// `.N` suffix, which sorts after it, so TensorBoard reads the files in order).
    pub(super) fn create(dir: &Path) -> Result<EventWriter, TrainError> {
        fs_err::create_dir_all(dir).map_err(TrainError::io(dir))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let base = format!("events.out.tfevents.{}.{}", now.as_secs(), hostname());
        let mut path = dir.join(&base);
        let mut n = 0;
        let file = loop {
            match fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    n += 1;
                    path = dir.join(format!("{base}.{n}"));
                }
                Err(e) => return Err(TrainError::io(&path)(e)),
            }
        };
        let mut w = EventWriter { path, file };
        let mut event = Vec::new();
        put_f64(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        w.write_record(&event)?;
        Ok(w)
    }

    /// Writes one event at `step` with a scalar for every number in `record` (a
    /// `metrics.jsonl` line as JSON).
    pub(super) fn push(&mut self, step: u64, record: &Value) -> Result<(), TrainError> {
        let scalars = scalars(record);
        if scalars.is_empty() {
            return Ok(());
        }
        let mut summary = Vec::new();
        for (tag, value) in &scalars {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_f32(&mut v, 2, *value as f32);
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        put_f64(&mut event, 1, wall_time());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// Makes what was written durable (at each checkpoint).
    pub(super) fn sync(&self) -> Result<(), TrainError> {
        self.file.sync_data().map_err(TrainError::io(&self.path))
    }

    fn write_record(&mut self, data: &[u8]) -> Result<(), TrainError> {
        // One write per record: a run killed mid-way leaves at most one torn record.
        self.file
            .write_all(&frame(data))
            .map_err(TrainError::io(&self.path))
    }
}

/// The `(tag, value)` pairs of a record: every number except `step`, tagged
/// `<kind>/<field>` (nested objects add their key: `val/ema/top1`). Nulls (a value
/// that was not finite) and strings are left out.
pub(super) fn scalars(record: &Value) -> Vec<(String, f64)> {
    let kind = record["kind"].as_str().unwrap_or("metrics");
    let mut out = Vec::new();
    if let Some(obj) = record.as_object() {
        for (k, v) in obj {
            if k != "step" && k != "kind" {
                flatten(&format!("{kind}/{k}"), v, &mut out);
            }
        }
    }
    out
}

fn flatten(tag: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((tag.to_owned(), x));
            }
        }
        Value::Object(obj) => {
            for (k, v) in obj {
                flatten(&format!("{tag}/{k}"), v, out);
            }
        }
        _ => {}
    }
}

/// Keeps, in every event file of `dir`, the events whose record `keep` accepts (given
/// back as JSON: `kind`, `step` and the fields of its tags) and the files' version
/// events; a torn or corrupt tail (a run killed mid-write) is dropped. A resumed run
/// calls it with the rule that cuts `metrics.jsonl` back to its checkpoint, so the new
/// file continues the curves without a repeated step.
pub(super) fn truncate(dir: &Path, keep: impl Fn(&Value) -> bool) -> Result<(), TrainError> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Ok(());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    for path in files {
        let bytes = fs_err::read(&path).map_err(TrainError::io(&path))?;
        let mut out = Vec::with_capacity(bytes.len());
        for data in records(&bytes) {
            let keep_it = match parse_event(data) {
                Some(Parsed::Scalars(record)) => keep(&record),
                Some(Parsed::Other) => true,
                None => false,
            };
            if keep_it {
                out.extend_from_slice(&frame(data));
            }
        }
        if out.len() != bytes.len() {
            pmv_core::util::write_atomic(&path, &out).map_err(TrainError::io(&path))?;
        }
    }
    Ok(())
}

/// The data of each whole record with valid checksums, up to the first that is not.
fn records(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while bytes.len() >= 12 {
        let (len_bytes, rest) = bytes.split_at(8);
        let len_crc = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if masked_crc(len_bytes) != len_crc {
            break;
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0xff; 8]));
        let rest = &rest[4..];
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&l| l.checked_add(4).is_some_and(|n| n <= rest.len()))
        else {
            break;
        };
        let (data, rest) = rest.split_at(len);
        let crc = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if masked_crc(data) != crc {
            break;
        }
        out.push(data);
        bytes = &rest[4..];
    }
    out
}

/// What an event read back holds.
enum Parsed {
    /// A summary of scalars, as the record it came from (`kind`, `step`, fields).
    Scalars(Value),
    /// Anything else (the file version).
    Other,
}

/// Reads the step and the scalars of an event; `None` for bytes that are not one.
fn parse_event(data: &[u8]) -> Option<Parsed> {
    let mut step = 0u64;
    let mut summary = None;
    for (field, value) in fields(data)? {
        match (field, value) {
            (2, Field::Varint(s)) => step = s,
            (5, Field::Bytes(b)) => summary = Some(b),
            _ => {}
        }
    }
    let Some(summary) = summary else {
        return Some(Parsed::Other);
    };
    let mut record = Map::new();
    for (field, value) in fields(summary)? {
        let (1, Field::Bytes(v)) = (field, value) else {
            continue;
        };
        let mut tag = None;
        let mut x = None;
        for (field, value) in fields(v)? {
            match (field, value) {
                (1, Field::Bytes(t)) => tag = std::str::from_utf8(t).ok(),
                (2, Field::Fixed32(bits)) => x = Some(f32::from_bits(bits)),
                _ => {}
            }
        }
        let (Some(tag), Some(x)) = (tag, x) else {
            continue;
        };
        let mut parts = tag.split('/');
        let kind = parts.next().unwrap_or_default();
        record.insert("kind".into(), Value::from(kind));
        let mut obj = &mut record;
        let path: Vec<&str> = parts.collect();
        for (i, key) in path.iter().enumerate() {
            if i + 1 == path.len() {
                // Whole numbers come back as integers, as in metrics.jsonl.
                let v = if x >= 0.0 && x.fract() == 0.0 && x < 2f32.powi(53) {
                    Value::from(x as u64)
                } else {
                    Value::from(f64::from(x))
                };
                obj.insert((*key).to_owned(), v);
            } else {
                let next = obj
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(next) = next else {
                    return None;
                };
                obj = next;
            }
        }
    }
    record.insert("step".into(), Value::from(step));
    Some(Parsed::Scalars(Value::Object(record)))
}

/// A protobuf field's value, by wire type.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of a protobuf message; `None` for bytes that are not one.
fn fields(mut data: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(&mut data)?),
            1 => {
                data = data.get(8..)?;
                Field::Fixed64
            }
            2 => {
                let len = usize::try_from(varint(&mut data)?).ok()?;
                let b = data.get(..len)?;
                data = &data[len..];
                Field::Bytes(b)
            }
            5 => {
                let b = data.get(..4)?;
                data = &data[4..];
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn put_f64(out: &mut Vec<u8>, field: u64, v: f64) {
    put_varint(out, (field << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f32(out: &mut Vec<u8>, field: u64, v: f32) {
    put_varint(out, (field << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), a byte at a time from a table.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The machine's name, as file names allow it ("localhost" if it has none).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if rc != 0 || name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720, B.4).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn events_read_back_as_their_records_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        let a = json!({"kind": "train", "step": 3, "loss": 1.5, "lr": 0.25});
        let b = json!({"kind": "val", "step": 4, "epoch": 1, "top1": 0.5,
                       "ema": {"top1": 0.75}});
        w.push(3, &a).unwrap();
        w.push(4, &b).unwrap();
        let path = w.path.clone();
        drop(w);
        // A torn record after them.
        let mut bytes = fs_err::read(&path).unwrap();
        bytes.extend_from_slice(&frame(b"\x10\x05")[..7]);
        fs_err::write(&path, &bytes).unwrap();
        let seen = std::cell::RefCell::new(vec![]);
        truncate(dir.path(), |v| {
            seen.borrow_mut().push(v.clone());
            v["step"].as_u64() != Some(4)
        })
        .unwrap();
        assert_eq!(seen.into_inner(), vec![a, b]);
        let kept = fs_err::read(&path).unwrap();
        let events = records(&kept);
        assert_eq!(events.len(), 2, "the version event and step 3");
        assert!(matches!(parse_event(events[0]), Some(Parsed::Other)));
    }

    #[test]
    fn hostile_records_end_the_reading_without_a_panic() {
        // A length with a valid checksum that runs past the end of the file.
        let len = u64::MAX.to_le_bytes();
        let mut bytes = len.to_vec();
        bytes.extend_from_slice(&masked_crc(&len).to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        assert!(records(&bytes).is_empty());
        // A whole record whose data is not a protobuf message.
        let framed = frame(&[0x0f, 0xff]);
        assert_eq!(records(&framed), vec![&[0x0f, 0xff][..]]);
        assert!(parse_event(&[0x0f, 0xff]).is_none());
        // A varint that never ends.
        let mut endless = vec![0x10];
        endless.extend([0xff; 10]);
        assert!(parse_event(&endless).is_none());
    }

    #[test]
    fn a_second_file_in_the_same_second_sorts_after_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path, b.path);
        assert!(a.path < b.path, "{:?} {:?}", a.path, b.path);
    }

    #[test]
    fn non_numbers_and_nulls_are_not_scalars() {
        let s = scalars(&json!({"kind": "train", "step": 1, "loss": null, "lr": 2, "x": "y"}));
        assert_eq!(s, vec![("train/lr".to_owned(), 2.0)]);
    }
}
