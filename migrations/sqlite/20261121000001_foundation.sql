-- Users, hashed API tokens, packages and their owners, uploads in the
-- holding queue, stable versions, and the event log.
-- Timestamps are milliseconds since the Unix epoch; flags are 0/1 integers
-- so that both databases read them the same way.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    email       TEXT    NOT NULL,
    is_operator INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash)
);

CREATE TABLE packages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    state      TEXT    NOT NULL DEFAULT 'active',
    created_at INTEGER NOT NULL,
    CONSTRAINT packages_name_key UNIQUE (name)
);

CREATE TABLE owners (
    package_id INTEGER NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at   INTEGER NOT NULL,
    CONSTRAINT owners_pkey PRIMARY KEY (package_id, user_id)
);

CREATE TABLE uploads (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    package_id    INTEGER NOT NULL REFERENCES packages (id),
    version       TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    manifest      TEXT    NOT NULL,
    uploader_id   INTEGER NOT NULL REFERENCES users (id),
    state         TEXT    NOT NULL,
    state_reason  TEXT,
    superseded_by INTEGER REFERENCES uploads (id),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX uploads_state_id ON uploads (state, id);
CREATE INDEX uploads_package_id ON uploads (package_id, id);

CREATE TABLE versions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    package_id  INTEGER NOT NULL REFERENCES packages (id),
    version     TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    size_bytes  INTEGER NOT NULL,
    manifest    TEXT    NOT NULL,
    upload_id   INTEGER REFERENCES uploads (id),
    promoted_at INTEGER NOT NULL,
    CONSTRAINT versions_package_version_key UNIQUE (package_id, version)
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    package_id INTEGER REFERENCES packages (id),
    upload_id  INTEGER REFERENCES uploads (id),
    actor_id   INTEGER REFERENCES users (id),
    detail     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_package_id ON events (package_id, id);
