-- The integrity checks of each upload, their verdicts, and the serial of
-- the stable repository.

CREATE TABLE checks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    upload_id   INTEGER NOT NULL REFERENCES uploads (id),
    kind        TEXT    NOT NULL,
    platform    TEXT    NOT NULL DEFAULT '',
    state       TEXT    NOT NULL DEFAULT 'pending',
    weight      REAL    NOT NULL,
    required    INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER,
    summary     TEXT,
    log         TEXT,
    metadata    TEXT,
    CONSTRAINT checks_upload_kind_platform_key UNIQUE (upload_id, kind, platform)
);
CREATE INDEX checks_state ON checks (state, id);

CREATE TABLE verdicts (
    upload_id    INTEGER PRIMARY KEY REFERENCES uploads (id),
    accepted     INTEGER NOT NULL,
    score        REAL    NOT NULL,
    threshold    REAL    NOT NULL,
    passmark     TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    stable_moved INTEGER NOT NULL,
    decided_at   INTEGER NOT NULL
);

-- The resolution of an upload's closure when it was queued and when its
-- checks started (JSON name -> version): a difference means the stable
-- repository moved under it.
ALTER TABLE uploads ADD COLUMN resolved_at_upload TEXT;
ALTER TABLE uploads ADD COLUMN resolved TEXT;

CREATE TABLE stable_state (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    serial INTEGER NOT NULL
);
INSERT INTO stable_state (id, serial) VALUES (1, 0);
