//! PMV-400 lists: `<video_id>.mp4,<class_id>` per line, no header.
//!
//! Owns the row syntax of the upstream `train_pmv400.csv` / `val_pmv400.csv` /
//! `test_pmv400.csv`. Sources do not come from these lists (the upstream links file
//! or a URL template supplies them); splits come from the file name or `--split`.

use super::{Ctx, ItemContent, ItemId, Parsed, Refused, finish_labels};

/// Whether `text` is a class-name list as upstream ships beside the split lists
/// (`class_name_mapping.csv`: `<name>,<id>` with the ids 0, 1, 2, ... in order), not a
/// split list: no row names an `.mp4`, and the ids count up from 0 one by one. A
/// split list's rows all name `<id>.mp4`, so the two cannot be taken for each other,
/// and a shell glob such as `manifests/pmv400/*.csv` may hand over both.
pub fn is_class_name_list(text: &str) -> bool {
    let mut next = 0u64;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, id)) = line.rsplit_once(',') else {
            return false;
        };
        if name.trim().ends_with(".mp4") || id.trim().parse::<u64>() != Ok(next) {
            return false;
        }
        next += 1;
    }
    next > 0
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_name_lists_are_told_from_split_lists() {
        assert!(is_class_name_list(super::super::classes::PMV400_CLASSES));
        assert!(is_class_name_list("a, b,0\r\nc/d ,1\n\n"));
        for not in [
            "",
            "v0d00fg10000cc0bltrc77ud5sllkjug.mp4,0\nv0d00fg10000cc0bltrc77ud5sllkjuh.mp4,1\n",
            "a,0\nb,2\n",
            "a,1\n",
            "a,0\nb,0\n",
            "a\n",
        ] {
            assert!(!is_class_name_list(not), "{not:?}");
        }
    }
}
