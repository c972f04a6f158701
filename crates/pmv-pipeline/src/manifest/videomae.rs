//! VideoMAE / MMAction2 video lists: `<path-or-url> <label>` per line.
//!
//! Owns that row syntax. Fields are separated by any run of spaces and tabs, as
//! VideoMAE's own loaders accept; a path may therefore not contain whitespace. The
//! item id is the file name without its extension. Local paths become `local`
//! sources, resolved against the base directory when relative.

use super::locator::{Allow, parse_location};
use super::{Ctx, ItemContent, ItemId, Parsed, Refused, finish_labels, id_from_location};

pub(super) fn parse_line(text: &str, ctx: &mut Ctx<'_>) -> Result<Parsed, Refused> {
    let fields: Vec<&str> = text.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
    match fields.len() {
        2 => {}
        3 if fields[1].parse::<u64>().is_ok() && fields[2].parse::<u64>().is_ok() => {
            return Err(Refused::new(
                "3 fields '<path> <frames> <label>': this is a rawframes list; \
                 pmv-data reads video lists '<path> <label>'",
            ));
        }
        n => {
            return Err(Refused::new(format!(
                "expected 2 fields '<path-or-url> <label>' separated by spaces or tabs, found {n}"
            )));
        }
    }
    let (location, label_text) = (fields[0], fields[1]);
    let raw_id = id_from_location(location);
    let id = ItemId::parse(raw_id).map_err(|e| Refused::from(e).with_id(raw_id))?;
    let refuse = |reason: String| Refused::new(reason).with_id(id.as_str());
    let label: i64 = label_text.parse().map_err(|_| {
        refuse(format!(
            "label '{}' is not an integer",
            label_text.escape_debug()
        ))
    })?;
    let label = ctx.classes.resolve_id(label).map_err(&refuse)?;
    let locator = parse_location(
        location,
        Allow::RemoteOrLocal {
            base: &ctx.opts.base_dir,
            roots: &ctx.opts.roots,
        },
    )
    .map_err(&refuse)?;
    Ok(Parsed {
        labels: finish_labels(vec![label], ctx.opts.multi_label)?,
        split: None,
        content: ItemContent {
            video: vec![locator],
            ..ItemContent::default()
        },
        id,
    })
}
