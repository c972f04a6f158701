//! The real PMV-400 lists, end to end through the binary.

use crate::util::{Env, pmv_list, s};

fn ingest_all(env: &Env) -> crate::util::Out {
    env.ingest(&[
        "--dataset",
        "pmv400",
        "--format",
        "pmv400",
        s(&pmv_list("train_pmv400.csv")),
        s(&pmv_list("val_pmv400.csv")),
        s(&pmv_list("test_pmv400.csv")),
    ])
}

#[test]
fn real_lists_give_the_published_numbers() {
    let env = Env::new();
    let out = ingest_all(&env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["rows"], 56_452 + 19_995 + 19_995);
    assert_eq!(report["rejected"], 0);
    assert_eq!(report["items"]["new"], 76_447);
    assert_eq!(report["classes"], 400);
    assert_eq!(report["no_source"], 76_447);

    let d = env.dataset("pmv400");
    assert_eq!(d["items"], 76_447);
    assert_eq!(d["classes"], 400);
    assert_eq!(d["format"], "pmv400");
    assert_eq!(d["multi_label"], false);
    assert_eq!(d["splits"]["train"], 56_452);
    assert_eq!(d["splits"]["val"], 19_995);
    assert_eq!(d["splits"]["test"], 19_995);
    assert_eq!(d["states"]["pending"], 76_447);
    assert_eq!(d["states"]["verified"], 0);
    assert_eq!(d["no_source"], 76_447);

    // test_pmv400.csv lists exactly the items of val_pmv400.csv, with the same labels.
    let only_one: i64 = env.query(
        "SELECT count(*) FROM (
           SELECT item_id FROM memberships m JOIN manifests f ON f.id = m.manifest_id
           WHERE f.path LIKE '%/val_pmv400.csv'
           EXCEPT
           SELECT item_id FROM memberships m JOIN manifests f ON f.id = m.manifest_id
           WHERE f.path LIKE '%/test_pmv400.csv')",
    );
    assert_eq!(only_one, 0);
    let both: i64 = env.query(
        "SELECT count(*) FROM items i WHERE EXISTS (SELECT 1 FROM memberships m WHERE m.item_id = i.id AND m.split = 'val')
           AND EXISTS (SELECT 1 FROM memberships m WHERE m.item_id = i.id AND m.split = 'test')",
    );
    assert_eq!(both, 19_995);
    // No item is in train and an evaluation split.
    let leaked: i64 = env.query(
        "SELECT count(*) FROM items i WHERE EXISTS (SELECT 1 FROM memberships m WHERE m.item_id = i.id AND m.split = 'train')
           AND EXISTS (SELECT 1 FROM memberships m WHERE m.item_id = i.id AND m.split <> 'train')",
    );
    assert_eq!(leaked, 0);

    // Spot checks against the files: first train row, a class name with a trailing
    // space upstream, the one 32-hex id.
    let label: String =
        env.query("SELECT labels FROM items WHERE key = 'v0d00fg10000cc0bltrc77ud5sllkjug'");
    assert_eq!(label, "0");
    let name: String = env.query("SELECT name FROM classes WHERE class_id = 4");
    assert_eq!(name, "playing flute");
    let per_class_min: i64 = env.query(
        "SELECT min(n) FROM (SELECT count(*) AS n FROM memberships WHERE split = 'train' GROUP BY labels)",
    );
    let per_class_max: i64 = env.query(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM memberships WHERE split = 'train' GROUP BY labels)",
    );
    assert_eq!((per_class_min, per_class_max), (60, 504));
}

#[test]
fn reingesting_unchanged_lists_writes_nothing() {
    let env = Env::new();
    assert_eq!(ingest_all(&env).code, 0);
    let before: (i64, i64, i64) = env
        .catalog()
        .query_row(
            "SELECT (SELECT max(updated_at) FROM items), (SELECT count(*) FROM memberships),
                    (SELECT max(ingested_at) FROM manifests)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = ingest_all(&env);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let r = again.json();
    assert_eq!(r["unchanged"], true);
    assert_eq!(r["written"], false);
    assert!(
        r["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "unchanged")
    );
    let after: (i64, i64, i64) = env
        .catalog()
        .query_row(
            "SELECT (SELECT max(updated_at) FROM items), (SELECT count(*) FROM memberships),
                    (SELECT max(ingested_at) FROM manifests)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(before, after, "an unchanged re-ingest wrote to the catalog");

    // The human form says so too.
    let text = env.run(&[
        "ingest",
        "--dataset",
        "pmv400",
        "--format",
        "pmv400",
        s(&pmv_list("train_pmv400.csv")),
    ]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("unchanged"), "{}", text.stdout);
}

#[test]
fn links_and_templates_give_douyin_sources() {
    let env = Env::new();
    let links = env.write(
        "video_links.csv",
        "https://www.douyin.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug,0\n\
         https://www.douyin.com/aweme/v1/play/?video_id=not_in_the_lists,3\n",
    );
    let out = env.ingest(&[
        "--dataset",
        "pmv",
        "--format",
        "pmv400",
        "--links",
        s(&links),
        "--url-template",
        "https://mirror.example/pmv/{id}.mp4",
        s(&pmv_list("val_pmv400.csv")),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["no_source"], 0);
    let first: String = env.query(
        "SELECT group_concat(kind || ' ' || origin || ' ' || location, ' | ') FROM
           (SELECT * FROM sources s JOIN items i ON i.id = s.item_id
            WHERE i.key = 'v0200fg10000ccta8jrc77u7sv784eeg' ORDER BY rank)",
    );
    assert_eq!(
        first,
        "direct template https://mirror.example/pmv/v0200fg10000ccta8jrc77u7sv784eeg.mp4"
    );
    let d = env.dataset("pmv");
    assert_eq!(d["sources"]["direct"], 19_995);
}

#[test]
fn a_links_file_orders_sources_before_the_template() {
    let env = Env::new();
    let list = env.write(
        "train_small.csv",
        "v0d00fg10000cc0bltrc77ud5sllkjug.mp4,0\n",
    );
    let links = env.write(
        "links.csv",
        "url\nhttps://www.douyin.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug\n",
    );
    let out = env.ingest(&[
        "--dataset",
        "p",
        "--format",
        "pmv400",
        "--links",
        s(&links),
        "--url-template",
        "https://mirror.example/{id}.mp4",
        s(&list),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let kinds = env.strings("SELECT kind || '/' || origin FROM sources ORDER BY rank");
    assert_eq!(kinds, vec!["douyin/links", "direct/template"]);
}

/// `ingest --format pmv400 manifests/pmv400/*.csv` hands over the class-name list with
/// the split lists: it is read as the class file, not as a list whose rows all fail.
#[test]
fn the_class_name_list_among_the_manifests_is_the_class_file() {
    let env = Env::new();
    let classes = std::fs::read_to_string(pmv_list("class_name_mapping.csv")).unwrap();
    // One name corrected, so that the file is seen to be read.
    let classes = classes.replacen("playing flute ,4", "playing the flute,4", 1);
    let dir = env.path("lists");
    env.write("lists/class_name_mapping.csv", &classes);
    env.write(
        "lists/train_pmv400.csv",
        "v0d00fg10000cc0bltrc77ud5sllkjug.mp4,0\nv0d00fg10000cc0bltrc77ud5sllkjuh.mp4,4",
    );
    let glob = |name: &str| s(&dir.join(name)).to_owned();
    let out = env.ingest(&[
        "--dataset".to_owned(),
        "pmv400".into(),
        "--format".into(),
        "pmv400".into(),
        glob("class_name_mapping.csv"),
        glob("train_pmv400.csv"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["rejected"], 0, "{report}");
    assert_eq!(report["rows"], 2, "{report}");
    assert_eq!(report["items"]["new"], 2);
    let name: String = env.query("SELECT name FROM classes WHERE class_id = 4");
    assert_eq!(name, "playing the flute");
    let manifests: i64 = env.query("SELECT count(*) FROM manifests");
    assert_eq!(manifests, 1, "the class list is no manifest");

    // Two class files are one too many, whichever way they come.
    let out = env.run(&[
        "ingest",
        "--dataset",
        "pmv400",
        "--format",
        "pmv400",
        "--classes",
        &glob("class_name_mapping.csv"),
        &glob("class_name_mapping.csv"),
        &glob("train_pmv400.csv"),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("is a class-name list and so is"),
        "{}",
        out.stderr
    );
}
