//! PMV-400 lists: `<video_id>.mp4,<class_id>` per line, no header.
//!
//! Owns the row syntax of the upstream `train_pmv400.csv` / `val_pmv400.csv` /
//! `test_pmv400.csv`. Sources do not come from these lists (the upstream links file
//! or a URL template supplies them); splits come from the file name or `--split`.

use super::{Ctx, ItemContent, ItemId, Parsed, Refused, finish_labels};

pub(super) fn parse_line(text: &str, ctx: &mut Ctx<'_>) -> Result<Parsed, Refused> {
    let fields: Vec<&str> = text.split(',').collect();
    if fields.len() != 2 {
        return Err(Refused::new(format!(
            "expected 2 comma-separated fields '<id>.mp4,<label>', found {}",
            fields.len()
        )));
    }
    let name = fields[0].trim();
    let raw_id = name.strip_suffix(".mp4").unwrap_or(name);
    let id = ItemId::parse(raw_id).map_err(|e| Refused::from(e).with_id(raw_id))?;
    let label_text = fields[1].trim();
    let label: i64 = label_text.parse().map_err(|_| {
        Refused::new(format!(
            "label '{}' is not an integer",
            label_text.escape_debug()
        ))
        .with_id(id.as_str())
    })?;
    let label = ctx
        .classes
        .resolve_id(label)
        .map_err(|e| Refused::new(e).with_id(id.as_str()))?;
    Ok(Parsed {
        labels: finish_labels(vec![label], ctx.opts.multi_label)?,
        id,
        split: None,
        content: ItemContent::default(),
    })
}
