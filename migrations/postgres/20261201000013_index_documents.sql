-- The per-package stable index (SPEC section 10): which packages have an
-- index document and the serial at which each last changed (the bodies
-- are files under stable/index/, rebuilt from the database), and the
-- changes log that followers read, one row per stable change.

CREATE TABLE index_documents (
    package_id BIGINT PRIMARY KEY REFERENCES packages (id),
    serial     BIGINT  NOT NULL
);

-- Every package with a stable version has a document, as of now.
INSERT INTO index_documents (package_id, serial)
SELECT DISTINCT v.package_id, (SELECT serial FROM stable_state WHERE id = 1) FROM versions v;

CREATE TABLE stable_changes (
    serial   BIGINT  PRIMARY KEY,
    kind     TEXT    NOT NULL,
    -- JSON: [{"name": ..., "sha256": ... or null when the document went}]
    packages TEXT    NOT NULL,
    at       BIGINT  NOT NULL
);
CREATE INDEX stable_changes_at ON stable_changes (at);
