-- Mirrors (SPEC section 10): a follower keeps the primary's index documents
-- byte for byte (so its ETags are the primary's) and where it stands.

CREATE TABLE mirror_documents (
    name   TEXT    PRIMARY KEY,
    serial INTEGER NOT NULL,
    sha256 TEXT    NOT NULL,
    body   TEXT    NOT NULL
);

CREATE TABLE mirror_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    primary_url    TEXT    NOT NULL,
    -- The primary's serial when it last answered, and when that was (ms).
    primary_serial INTEGER NOT NULL,
    synced_at      INTEGER NOT NULL,
    -- Restarts from the primary's snapshot.
    snapshots      INTEGER NOT NULL DEFAULT 0
);
