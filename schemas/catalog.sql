-- pmv-data catalog schema, version 3.
-- Generated from crates/pmv-catalog/src/migrations.rs by the test `schema_file_matches_migrations`;
-- regenerate with PMV_BLESS=1 cargo test schema_file. Do not edit by hand.

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

CREATE TABLE classes (
    dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    class_id   INTEGER NOT NULL CHECK (class_id >= 0),
    name       TEXT NOT NULL,
    PRIMARY KEY (dataset_id, class_id),
    UNIQUE (dataset_id, name)
) STRICT, WITHOUT ROWID;

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

CREATE INDEX items_removed ON items (dataset_id) WHERE state = 'removed';

CREATE INDEX items_no_source ON items (dataset_id, state) WHERE video_sources IS NULL;

CREATE VIEW sources (item_id, role, rank, kind, location, origin) AS
    SELECT i.id, 'video', j.key, j.value ->> 'kind', j.value ->> 'location', j.value ->> 'origin'
    FROM items i, json_each(i.video_sources) j
    UNION ALL
    SELECT i.id, 'cover', j.key, j.value ->> 'kind', j.value ->> 'location', j.value ->> 'origin'
    FROM items i, json_each(i.cover_sources) j;

CREATE TABLE memberships (
    item_id     INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    split       TEXT NOT NULL,
    line        INTEGER NOT NULL,
    labels      TEXT NOT NULL,
    PRIMARY KEY (item_id, manifest_id)
) STRICT, WITHOUT ROWID;

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

CREATE INDEX items_dataset_state ON items (dataset_id, state);

CREATE TABLE manifest_roots (
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    dir         TEXT NOT NULL,
    PRIMARY KEY (manifest_id, dir)
) STRICT, WITHOUT ROWID;
