-- The web pages (SPEC section 8a): sign-in sessions, and the package
-- website's full-text search index.

-- A signed-in browser. The cookie carries a random id; only its sha256 is
-- stored, as for API tokens. Every form of the session carries `csrf`.
-- Revoking the token a session was signed in with ends the session.
CREATE TABLE web_sessions (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id   INTEGER NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

-- One row per stable package (rowid = package id): its name, latest
-- version and that version's description, kept by the triggers below in
-- the transaction that promotes or removes a version.
CREATE VIRTUAL TABLE package_search USING fts5 (
    name,
    description,
    version UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);

INSERT INTO package_search (rowid, name, description, version)
SELECT p.id, p.name,
       CASE WHEN json_valid(v.manifest) THEN COALESCE(json_extract(v.manifest, '$.description'), '') ELSE '' END,
       v.version
FROM packages p
JOIN versions v ON v.id = (SELECT MAX(id) FROM versions WHERE package_id = p.id);

-- Versions only ever grow (a lower version is refused): the inserted one
-- is the latest.
CREATE TRIGGER package_search_on_promote AFTER INSERT ON versions
BEGIN
    DELETE FROM package_search WHERE rowid = NEW.package_id;
    INSERT INTO package_search (rowid, name, description, version)
    SELECT NEW.package_id, p.name,
           CASE WHEN json_valid(NEW.manifest) THEN COALESCE(json_extract(NEW.manifest, '$.description'), '') ELSE '' END,
           NEW.version
    FROM packages p WHERE p.id = NEW.package_id;
END;

CREATE TRIGGER package_search_on_remove AFTER DELETE ON versions
WHEN NOT EXISTS (SELECT 1 FROM versions WHERE package_id = OLD.package_id)
BEGIN
    DELETE FROM package_search WHERE rowid = OLD.package_id;
END;

-- The page of an upload reads its events; the queue page its latest verdicts.
CREATE INDEX events_upload_id ON events (upload_id, id);
CREATE INDEX uploads_updated_at ON uploads (updated_at);
