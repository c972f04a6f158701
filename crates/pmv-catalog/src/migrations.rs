//! The catalog schema, as an append-only list of migrations.
//!
//! Migration `i` (0-based) takes a catalog from `user_version` i to i+1. A migration,
//! once released, is never edited: changes go in a new one at the end. The current
//! schema is mirrored in `schemas/catalog.sql`, and a test keeps the two equal.

// CHECK constraints spell out `x = 'a' OR x = 'b'` rather than `x IN ('a', 'b')`:
// SQLite evaluates an IN list of three or more constants by building an ephemeral
// b-tree on every row written, which made each insert 20 times slower.
pub const MIGRATIONS: &[&str] = &[
    // 1: datasets, classes, manifests, items, memberships, files, runs, and room for
    // the later stages.
    r#"
CREATE TABLE datasets (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    format      TEXT NOT NULL CHECK (
        format = 'pmv400' OR format = 'xinpianchang' OR format = 'videomae'
        OR format = 'jsonl'
    ),
    multi_label INTEGER NOT NULL CHECK (multi_label = 0 OR multi_label = 1),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Class ids never change meaning once stored; names may be corrected.
CREATE TABLE classes (
    dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    class_id   INTEGER NOT NULL CHECK (class_id >= 0),
    name       TEXT NOT NULL,
    PRIMARY KEY (dataset_id, class_id),
    UNIQUE (dataset_id, name)
) STRICT, WITHOUT ROWID;

-- One row per manifest input (file or directory) ever ingested into a dataset.
CREATE TABLE manifests (
    id          INTEGER PRIMARY KEY,
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    accepted    INTEGER NOT NULL,
    rejected    INTEGER NOT NULL,
    ingested_at INTEGER NOT NULL,
    UNIQUE (dataset_id, path)
) STRICT;

-- One row per unique video id in a dataset. labels: class ids, ascending,
-- comma-separated ('' for unlabeled), the union over the item's memberships.
-- video_sources, cover_sources: the candidate sources of each file, best first, as a
-- JSON array of {"kind", "location", "origin"} (NULL when there is none); the view
-- `sources` below shows them as rows. Kept inline so that ingesting an item is one
-- write, not three. fingerprint: hash of everything else the manifests say.
CREATE TABLE items (
    id              INTEGER PRIMARY KEY,
    dataset_id      INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    labels          TEXT NOT NULL,
    text            TEXT,
    duration_s      REAL,
    video_sources   TEXT,
    cover_sources   TEXT,
    expected_size   INTEGER,
    expected_sha256 TEXT,
    fingerprint     TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'active' CHECK (state = 'active' OR state = 'removed'),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    removed_at      INTEGER,
    UNIQUE (dataset_id, key)
) STRICT;

-- Small partial indexes so that counting removed items and items without a source does
-- not read every item (the table holds text and sources: hundreds of bytes a row).
CREATE INDEX items_removed ON items (dataset_id) WHERE state = 'removed';
CREATE INDEX items_no_source ON items (dataset_id, state) WHERE video_sources IS NULL;

-- Candidate sources of each file of an item, best first (rank 0 = primary).
-- kind: direct, douyin, onedrive or local; origin: manifest, links, template or mirror.
CREATE VIEW sources (item_id, role, rank, kind, location, origin) AS
    SELECT i.id, 'video', j.key, j.value ->> 'kind', j.value ->> 'location', j.value ->> 'origin'
    FROM items i, json_each(i.video_sources) j
    UNION ALL
    SELECT i.id, 'cover', j.key, j.value ->> 'kind', j.value ->> 'location', j.value ->> 'origin'
    FROM items i, json_each(i.cover_sources) j;

-- Which manifest lists which item, in which split, at which line, with which labels.
-- An item whose last membership goes becomes 'removed'.
CREATE TABLE memberships (
    item_id     INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    split       TEXT NOT NULL,
    line        INTEGER NOT NULL,
    labels      TEXT NOT NULL,
    PRIMARY KEY (item_id, manifest_id)
) STRICT, WITHOUT ROWID;

-- The stored copy of each file of an item. A row appears when a stage first takes
-- the file; an expected file without a row is 'pending'.
CREATE TABLE files (
    item_id       INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role = 'video' OR role = 'cover' OR role = 'text'),
    state         TEXT NOT NULL DEFAULT 'pending' CHECK (
        state = 'pending' OR state = 'downloading' OR state = 'downloaded'
        OR state = 'verified' OR state = 'sharded'
        OR state = 'failed_transient' OR state = 'failed_permanent'
        OR state = 'corrupt'
    ),
    path          TEXT,
    size          INTEGER,
    sha256        TEXT,
    etag          TEXT,
    last_modified TEXT,
    source_rank   INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error_class   TEXT,
    error_message TEXT,
    next_retry_at INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (item_id, role)
) STRICT, WITHOUT ROWID;

CREATE INDEX files_state ON files (state, next_retry_at);

-- What the media layer saw in a stored video.
CREATE TABLE probes (
    item_id    INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    sha256     TEXT NOT NULL,
    container  TEXT,
    codec      TEXT,
    width      INTEGER,
    height     INTEGER,
    rotation   INTEGER,
    sar        TEXT,
    avg_fps    REAL,
    real_fps   REAL,
    duration_s REAL,
    frames     INTEGER,
    vfr        INTEGER CHECK (vfr = 0 OR vfr = 1),
    probed_at  INTEGER NOT NULL
) STRICT;

-- Frame sampling and geometry of shards; id is a stable hash of params.
CREATE TABLE recipes (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    params     TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE shards (
    id         INTEGER PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    recipe_id  TEXT NOT NULL REFERENCES recipes(id),
    split      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    path       TEXT NOT NULL UNIQUE,
    sha256     TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    samples    INTEGER NOT NULL,
    state      TEXT NOT NULL DEFAULT 'live' CHECK (state = 'live' OR state = 'replaced'),
    created_at INTEGER NOT NULL,
    UNIQUE (dataset_id, recipe_id, split, seq)
) STRICT;

-- Every sample's members inside its shard: byte offsets of the data of each member.
CREATE TABLE samples (
    shard_id      INTEGER NOT NULL REFERENCES shards(id) ON DELETE CASCADE,
    item_id       INTEGER NOT NULL REFERENCES items(id),
    ordinal       INTEGER NOT NULL,
    label         INTEGER,
    frames_offset INTEGER NOT NULL,
    frames_bytes  INTEGER NOT NULL,
    members       TEXT NOT NULL,
    PRIMARY KEY (shard_id, ordinal)
) STRICT, WITHOUT ROWID;

CREATE INDEX samples_item ON samples (item_id);

-- Every command that changed the root.
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    command     TEXT NOT NULL,
    args        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT NOT NULL CHECK (
        status = 'running' OR status = 'ok' OR status = 'partial'
        OR status = 'failed' OR status = 'interrupted'
    ),
    summary     TEXT
) STRICT;
"#,
    // 2: an active dataset's items in id order. The fetch planner pages through them
    // by `id > ?`; with only the (dataset_id, key) index SQLite sorted the rest of the
    // dataset for every page, and planning a 76k-item dataset took seconds.
    r#"
CREATE INDEX items_dataset_state ON items (dataset_id, state);
"#,
    // 3: the folders each manifest may have local files read from: its own folder
    // tree and `--base-dir`, as real paths. The fetch stage reads a local source only
    // inside the folders of its dataset's manifests (and the configured roots); a
    // manifest ingested before has no rows here, and its own folder stands in.
    r#"
CREATE TABLE manifest_roots (
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    dir         TEXT NOT NULL,
    PRIMARY KEY (manifest_id, dir)
) STRICT, WITHOUT ROWID;
"#,
];
