//! Generic JSON lines: one object per item, validated against
//! `schemas/manifest-item.schema.json`.
//!
//! Owns the validation of each object against the published schema (so the schema is
//! the contract, not a comment) and the mapping of its fields to a row.

use serde::Deserialize;
use serde_json::Value;

use super::locator::{Allow, parse_location};
use super::{Ctx, ItemContent, ItemId, Parsed, Refused, Split, finish_labels};

pub const SCHEMA: &str = include_str!("../../../../schemas/manifest-item.schema.json");

pub(super) struct Validator(jsonschema::Validator);

impl Validator {
    pub(super) fn new() -> Validator {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the bundled schema is JSON");
        Validator(jsonschema::validator_for(&schema).expect("the bundled schema is valid"))
    }
}

#[derive(Deserialize)]
struct Item {
    id: String,
    #[serde(default)]
    urls: Vec<String>,
    label: Option<Label>,
    labels: Option<Vec<Label>>,
    split: Option<String>,
    text: Option<String>,
    cover_url: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    duration: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Label {
    Id(i64),
    Name(String),
}

pub(super) fn parse_line(text: &str, ctx: &mut Ctx<'_>) -> Result<Parsed, Refused> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Refused::new(format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Refused::new(format!(
            "a row must be a JSON object, not {}",
            json_type(&value)
        )));
    }
    let raw_id = value.get("id").and_then(Value::as_str).map(str::to_owned);
    let with_id = |r: Refused| match &raw_id {
        Some(id) => r.with_id(id),
        None => r,
    };
    let validator = ctx.jsonl.expect("jsonl rows are read with a validator");
    if let Some(error) = validator.0.iter_errors(&value).next() {
        let at = error.instance_path().to_string();
        let place = if at.is_empty() {
            String::new()
        } else {
            format!(" at {at}")
        };
        return Err(with_id(Refused::new(format!(
            "does not match the schema{place}: {error}"
        ))));
    }
    let item: Item =
        serde_json::from_value(value).map_err(|e| with_id(Refused::new(e.to_string())))?;
    let id = ItemId::parse(&item.id).map_err(|e| Refused::from(e).with_id(&item.id))?;
    let refuse = |reason: String| Refused::new(reason).with_id(id.as_str());

    let mut labels = vec![];
    for label in item
        .label
        .into_iter()
        .chain(item.labels.into_iter().flatten())
    {
        let resolved = match label {
            Label::Id(n) => ctx.classes.resolve_id(n),
            Label::Name(name) => ctx.classes.resolve_name(&name),
        };
        labels.push(resolved.map_err(&refuse)?);
    }
    let split = item
        .split
        .as_deref()
        .map(Split::parse)
        .transpose()
        .map_err(&refuse)?;
    let allow = Allow::RemoteOrLocal {
        base: &ctx.opts.base_dir,
        roots: &ctx.opts.roots,
    };
    let mut video = Vec::with_capacity(item.urls.len());
    for u in &item.urls {
        let loc = parse_location(u.trim(), allow).map_err(&refuse)?;
        if !video.contains(&loc) {
            video.push(loc);
        }
    }
    let cover = item
        .cover_url
        .as_deref()
        .map(|u| parse_location(u.trim(), allow))
        .transpose()
        .map_err(&refuse)?;
    Ok(Parsed {
        labels: finish_labels(labels, ctx.opts.multi_label).map_err(|r| r.with_id(id.as_str()))?,
        split,
        content: ItemContent {
            text: item.text.filter(|t| !t.trim().is_empty()),
            duration_s: item.duration,
            video,
            cover: cover.into_iter().collect(),
            sha256: item.sha256.map(|s| s.to_ascii_lowercase()),
            size: item.size,
        },
        id,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
