-- Upload groups (SPEC section 3, rule 8): archives uploaded together are
-- checked against each other and accepted or rejected as one.

CREATE TABLE upload_groups (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id     INTEGER NOT NULL REFERENCES users (id),
    expected     INTEGER,
    state        TEXT    NOT NULL DEFAULT 'open',
    reason       TEXT,
    created_at   INTEGER NOT NULL,
    submitted_at INTEGER
);
CREATE INDEX upload_groups_state ON upload_groups (state, created_at);

ALTER TABLE uploads ADD COLUMN group_id INTEGER REFERENCES upload_groups (id);
CREATE INDEX uploads_group ON uploads (group_id);
