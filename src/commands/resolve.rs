//! `pmv-data resolve`: how links resolve (kind, canonical id, the URL that would be
//! downloaded), online or with `--offline`, for links given on the command line or
//! for every source of a dataset in the catalog. Downloads no body, takes no lock and
//! writes nothing.

use std::collections::BTreeMap;

use anyhow::Result;
use pmv_data::catalog::Catalog;
use pmv_data::fetch::{self, FetchSettings, for_each_source};
use pmv_data::manifest::{Allow, Locator, parse_location};
use pmv_data::redact::{redact_text, redact_url};
use pmv_data::source::local::LocalRoots;
use pmv_data::source::{Offline, Resolved, SourceSettings, Target, resolve_offline};
use serde_json::{Value, json};

use super::App;
use crate::cli::ResolveArgs;
use crate::exit::Exit;

/// Failures listed in full for `--dataset`.
const LISTED_FAILURES: usize = 100;

pub fn run(app: &App, args: ResolveArgs) -> Result<Exit> {
    let settings = FetchSettings::from_config(&app.config.fetch);
    let sources = SourceSettings::from_config(&app.config.sources)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
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
    // In the order of the input.
    let mut docs: Vec<Value> = vec![Value::Null; args.urls.len()];
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
                docs[i] = json!({ "input": redact_url(raw), "error": e, "class": "bad_url" });
            }
        }
    }
    if args.offline {
        for (i, loc) in parsed {
            docs[i] = match resolve_offline(&loc, args.item.as_deref(), sources) {
                Ok(o) => offline_doc(&args.urls[i], &o),
                Err(f) => {
                    failed += 1;
                    json!({ "input": redact_url(&args.urls[i]), "kind": loc.kind, "error": f.message, "class": f.class })
                }
            };
        }
    } else {
        let asks: Vec<(Locator, Option<String>)> = parsed
            .iter()
            .map(|(_, l)| (l.clone(), args.item.clone()))
            .collect();
        let answers = fetch::resolve_online(settings, sources, &asks)?;
        for ((i, loc), answer) in parsed.iter().zip(answers) {
            docs[*i] = match answer {
                Ok(r) => online_doc(&args.urls[*i], &r),
                Err(f) => {
                    failed += 1;
                    json!({ "input": redact_url(&args.urls[*i]), "kind": loc.kind, "error": f.message, "class": f.class })
                }
            };
        }
    }
    if app.json {
        app.print_json(&docs)?;
    } else {
        for d in &docs {
            print_doc(d);
        }
    }
    Ok(if failed > 0 { Exit::Rejected } else { Exit::Ok })
}

/// What `resolve` prints of an offline answer; every URL shown with its secrets
/// redacted (see [`redact_url`]).
fn offline_doc(input: &str, o: &Offline) -> Value {
    json!({
        "input": redact_url(input),
        "kind": o.kind,
        "canonical_id": o.canonical_id,
        "download_url": o.download_url.as_deref().map(redact_url),
        "lookup_url": o.lookup_url.as_deref().map(redact_url),
        "host": o.host,
        "note": o.note,
        "offline": true,
    })
}

/// What `resolve` prints of an online answer, URLs redacted as above.
fn online_doc(input: &str, r: &Resolved) -> Value {
    let (url, path) = match &r.target {
        Target::Http { url, .. } => (Some(redact_url(url.as_str()).into_owned()), None),
        Target::Local { path } => (None, Some(path.display().to_string())),
    };
    json!({
        "input": redact_url(input),
        "kind": r.kind,
        "canonical_id": r.canonical_id,
        "via": r.via,
        "download_url": url,
        "path": path,
        "expected": {
            "size": r.expected.size,
            "sha1": r.expected.sha1,
            "quickxor": r.expected.quickxor,
        },
        "trail": r.trail.iter().map(|t| redact_text(t)).collect::<Vec<_>>(),
        "offline": false,
    })
}

fn print_doc(d: &Value) {
    println!("{}", d["input"].as_str().unwrap_or(""));
    let row = |k: &str, v: &Value| {
        let text = match v {
            Value::Null => return,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("  {k:<13} {text}");
    };
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
    if let Some(e) = d.get("expected") {
        for k in ["size", "sha1", "quickxor"] {
            row(&format!("expected {k}"), &e[k]);
        }
    }
    if let Some(trail) = d["trail"].as_array() {
        for t in trail {
            row("trail", t);
        }
    }
    if !d["error"].is_null() {
        println!(
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
        println!(
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
            println!(
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
