//! `pmv-data resolve`: how links resolve (kind, canonical id, the URL that would be
//! downloaded), online or with `--offline`, for links given on the command line or
//! for every source of a dataset in the catalog. Downloads no body, takes no lock and
//! writes nothing.

use std::collections::BTreeMap;

use anyhow::Result;
use pmv_catalog::Catalog;
use pmv_core::redact::{redact_text, redact_url};
use pmv_pipeline::fetch::{self, FetchSettings, for_each_source};
use pmv_pipeline::manifest::{Allow, Locator, parse_location};
use pmv_pipeline::source::local::LocalRoots;
use pmv_pipeline::source::{Resolved, SourceSettings, Target, resolve_offline};
use serde_json::{Value, json};

use super::App;
use crate::cli::ResolveArgs;
use pmv_term::exit::Exit;
use pmv_term::output::outln;

/// Failures listed in full for `--dataset`.
const LISTED_FAILURES: usize = 100;

pub fn run(app: &App, args: ResolveArgs) -> Result<Exit> {
    let settings = FetchSettings::from_config(&app.config.fetch);
    let sources = crate::commands::source_settings(app, &args.douyin)?;
    match &args.dataset {
        Some(name) => dataset(app, &args, name, &settings, &sources),
        None => links(app, &args, &settings, &sources),
    }
}

fn links(
    app: &App,
    args: &ResolveArgs,
    settings: &FetchSettings,
    sources: &SourceSettings,
) -> Result<Exit> {
    let cwd = std::env::current_dir()?;
    // A path typed on the command line is named by the user: any folder may hold it.
    // Nothing is read from it here either way.
    let anywhere = LocalRoots::new([std::path::Path::new("/")]);
    // In the order of the input; every entry has every key.
    let mut docs: Vec<Value> = args.urls.iter().map(|raw| entry(raw, None)).collect();
    let mut failed = 0;
    let mut parsed: Vec<(usize, Locator)> = vec![];
    for (i, raw) in args.urls.iter().enumerate() {
        match parse_location(
            raw.trim(),
            Allow::RemoteOrLocal {
                base: &cwd,
                roots: &anywhere,
            },
        ) {
            Ok(l) => parsed.push((i, l)),
            Err(e) => {
                failed += 1;
                docs[i]["class"] = "bad_url".into();
                docs[i]["error"] = e.into();
            }
        }
    }
    if args.offline {
        for (i, loc) in parsed {
            let d = &mut docs[i];
            *d = entry(&args.urls[i], Some(&loc));
            match resolve_offline(&loc, args.item.as_deref(), sources) {
                Ok(o) => {
                    d["canonical_id"] = o.canonical_id.into();
                    d["download_url"] = o.download_url.as_deref().map(redact_url).into();
                    d["lookup_url"] = o.lookup_url.as_deref().map(redact_url).into();
                    d["host"] = o.host.into();
                    d["note"] = o.note.into();
                    d["paths"] = o
                        .paths
                        .iter()
                        .map(|p| json!({"name": p.name, "lookup_url": redact_url(&p.lookup_url)}))
                        .collect::<Vec<_>>()
                        .into();
                }
                Err(f) => {
                    failed += 1;
                    d["class"] = f.class.to_string().into();
                    d["error"] = f.message.into();
                }
            }
        }
    } else {
        let asks: Vec<(Locator, Option<String>)> = parsed
            .iter()
            .map(|(_, l)| (l.clone(), args.item.clone()))
            .collect();
        let answers = fetch::resolve_online(settings, sources, &asks)?;
        for ((i, loc), answer) in parsed.iter().zip(answers) {
            let d = &mut docs[*i];
            *d = entry(&args.urls[*i], Some(loc));
            match answer {
                Ok(r) => online(d, &r),
                Err(f) => {
                    failed += 1;
                    d["class"] = f.class.to_string().into();
                    d["error"] = f.message.into();
                }
            }
        }
    }
    if app.json {
        app.print_json(&json!({
            "command": "resolve",
            "offline": args.offline,
            "links": docs,
        }))?;
    } else {
        for d in &docs {
            print_doc(d);
        }
    }
    Ok(if failed > 0 { Exit::Rejected } else { Exit::Ok })
}

/// One input's entry, before resolving: what it was read as (`loc`, when it could be).
/// Every URL an entry shows has its secrets redacted (see [`redact_url`]).
fn entry(input: &str, loc: Option<&Locator>) -> Value {
    json!({
        "input": redact_url(input),
        "location": loc.map(|l| redact_url(&l.location)),
        "kind": loc.map(|l| l.kind),
        "canonical_id": null,
        "via": null,
        "download_url": null,
        "path": null,
        "lookup_url": null,
        "host": null,
        "note": null,
        "paths": [],
        "expected": null,
        "trail": [],
        "class": null,
        "error": null,
    })
}

/// Fills an entry with an online answer.
fn online(d: &mut Value, r: &Resolved) {
    match &r.target {
        Target::Http { url, .. } => d["download_url"] = redact_url(url.as_str()).into(),
        Target::Local { path } => d["path"] = path.display().to_string().into(),
    }
    d["canonical_id"] = r.canonical_id.clone().into();
    d["via"] = r.via.into();
    d["expected"] = json!({
        "size_bytes": r.expected.size,
        "sha1": r.expected.sha1,
        "quickxor": r.expected.quickxor,
    });
    d["trail"] = r
        .trail
        .iter()
        .map(|t| redact_text(t))
        .collect::<Vec<_>>()
        .into();
}

fn print_doc(d: &Value) {
    outln!("{}", d["input"].as_str().unwrap_or(""));
    let row = |k: &str, v: &Value| {
        let text = match v {
            Value::Null => return,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        outln!("  {k:<13} {text}");
    };
    if d["location"] != d["input"] {
        row("location", &d["location"]);
    }
    for k in [
        "kind",
        "canonical_id",
        "via",
        "download_url",
        "path",
        "lookup_url",
        "host",
        "note",
    ] {
        row(k, &d[k]);
    }
    if let Some(paths) = d["paths"].as_array() {
        for (i, p) in paths.iter().enumerate() {
            let label = if i == 0 { "path" } else { "then path" };
            outln!(
                "  {label:<13} {}: {}",
                p["name"].as_str().unwrap_or(""),
                p["lookup_url"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(e) = d["expected"].as_object() {
        for (k, v) in e {
            row(&format!("expected {}", k.trim_end_matches("_bytes")), v);
        }
    }
    if let Some(trail) = d["trail"].as_array() {
        for t in trail {
            row("trail", t);
        }
    }
    if !d["error"].is_null() {
        outln!(
            "  error         {}: {}",
            d["class"].as_str().unwrap_or(""),
            d["error"].as_str().unwrap_or("")
        );
    }
}

fn dataset(
    app: &App,
    args: &ResolveArgs,
    name: &str,
    settings: &FetchSettings,
    sources: &SourceSettings,
) -> Result<Exit> {
    let Some(catalog) = Catalog::open_existing_readonly(&app.root.catalog_path())? else {
        anyhow::bail!(
            "no catalog in {}: ingest a dataset first",
            app.root.path().display()
        );
    };
    let Some(ds) = catalog.dataset(name)? else {
        anyhow::bail!("no dataset named '{name}' in {}", app.root.path().display());
    };
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut ok = 0u64;
    let mut failures: Vec<Value> = vec![];
    let mut failed = 0u64;
    let mut canonical_differs = 0u64;
    let mut note = |row: &fetch::SourceRow,
                    err: Option<(String, String)>,
                    canonical: Option<&str>| {
        *by_kind
            .entry(row.locator.kind.as_str().to_owned())
            .or_default() += 1;
        match err {
            None => {
                ok += 1;
                if canonical.is_some_and(|c| c != row.key) {
                    canonical_differs += 1;
                }
            }
            Some((class, message)) => {
                failed += 1;
                if failures.len() < LISTED_FAILURES {
                    failures.push(json!({
                            "item": row.key, "role": row.role, "rank": row.rank,
                            "location": redact_url(&row.locator.location), "class": class, "error": message,
                        }));
                }
            }
        }
    };
    let mut count = 0u64;
    let items = if args.offline {
        for_each_source(&catalog, &ds, args.limit, |row| {
            count += 1;
            match resolve_offline(&row.locator, Some(&row.key), sources) {
                Ok(o) => note(&row, None, o.canonical_id.as_deref()),
                Err(f) => note(&row, Some((f.class.to_string(), f.message)), None),
            }
        })?
    } else {
        let mut rows = vec![];
        let items = for_each_source(&catalog, &ds, args.limit, |r| rows.push(r))?;
        count = rows.len() as u64;
        let asks: Vec<(Locator, Option<String>)> = rows
            .iter()
            .map(|r| (r.locator.clone(), Some(r.key.clone())))
            .collect();
        let answers = fetch::resolve_online(settings, sources, &asks)?;
        for (row, a) in rows.iter().zip(answers) {
            match a {
                Ok(r) => note(row, None, r.canonical_id.as_deref()),
                Err(f) => note(row, Some((f.class.to_string(), f.message)), None),
            }
        }
        items
    };
    let doc = json!({
        "command": "resolve",
        "dataset": name,
        "items": items,
        "sources": count,
        "resolved": ok,
        "failed": failed,
        "kinds": by_kind,
        "canonical_id_differs_from_item": canonical_differs,
        "offline": args.offline,
        "failures": failures,
    });
    if app.json {
        app.print_json(&doc)?;
    } else {
        outln!(
            "{name}: {} items, {} sources: {} resolve, {} fail ({})",
            items,
            count,
            ok,
            failed,
            by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for f in &failures {
            outln!(
                "  {} {} #{}: {}: {}",
                f["item"].as_str().unwrap_or(""),
                f["role"].as_str().unwrap_or(""),
                f["rank"],
                f["class"].as_str().unwrap_or(""),
                f["error"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if failed > 0 { Exit::Rejected } else { Exit::Ok })
}
