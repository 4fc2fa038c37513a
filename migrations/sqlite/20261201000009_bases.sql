-- Bases (SPEC section 3, rules 6 and 7): what each check ran against, the
-- pending uploads an upload's checks assumed, every earlier run of a check
-- (a rebase never overwrites the history), and how often an upload was
-- rebased.

ALTER TABLE checks ADD COLUMN base TEXT;
ALTER TABLE uploads ADD COLUMN rebases INTEGER NOT NULL DEFAULT 0;

CREATE TABLE check_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    check_id    INTEGER NOT NULL REFERENCES checks (id),
    upload_id   INTEGER NOT NULL REFERENCES uploads (id),
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    worker      TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER,
    summary     TEXT,
    log         TEXT,
    metadata    TEXT,
    base        TEXT,
    ended_by    TEXT    NOT NULL
);
CREATE INDEX check_runs_check ON check_runs (check_id, id);

CREATE TABLE upload_assumptions (
    upload_id  INTEGER NOT NULL REFERENCES uploads (id),
    assumed_id INTEGER NOT NULL REFERENCES uploads (id),
    CONSTRAINT upload_assumptions_key PRIMARY KEY (upload_id, assumed_id)
);
CREATE INDEX upload_assumptions_assumed ON upload_assumptions (assumed_id);
