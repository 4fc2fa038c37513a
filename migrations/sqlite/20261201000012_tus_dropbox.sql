-- Resumable uploads (tus 1.0) and the drop box (SPEC section 9).

-- A partial upload in its owner's temporary space: the bytes live in
-- <data_dir>/tus/<owner_id>/<id>; `received` is authoritative (a file longer
-- than it is cut back). Once queued, `upload_id` names the upload, set in
-- the transaction that queued it, so a retried finish never queues twice.
CREATE TABLE tus_uploads (
    id          TEXT    PRIMARY KEY,
    owner_id    INTEGER NOT NULL REFERENCES users (id),
    length      INTEGER NOT NULL,
    received    INTEGER NOT NULL DEFAULT 0,
    metadata    TEXT    NOT NULL,
    filename    TEXT,
    sha256      TEXT,
    group_id    INTEGER REFERENCES upload_groups (id),
    upload_id   INTEGER REFERENCES uploads (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    CONSTRAINT tus_uploads_upload_once UNIQUE (upload_id)
);
CREATE INDEX tus_uploads_owner ON tus_uploads (owner_id, upload_id);
CREATE INDEX tus_uploads_expires ON tus_uploads (expires_at);

-- A drop-box manifest, by the sha256 of its bytes: processing it again
-- after a crash finds what was already done.
CREATE TABLE dropbox_batches (
    manifest_sha256 TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    group_id        INTEGER REFERENCES upload_groups (id),
    created_at      INTEGER NOT NULL
);

-- Each archive of a batch that was queued, written in the upload's own
-- transaction.
CREATE TABLE dropbox_uploads (
    manifest_sha256 TEXT    NOT NULL REFERENCES dropbox_batches (manifest_sha256),
    file            TEXT    NOT NULL,
    upload_id       INTEGER NOT NULL REFERENCES uploads (id),
    CONSTRAINT dropbox_uploads_once PRIMARY KEY (manifest_sha256, file)
);
