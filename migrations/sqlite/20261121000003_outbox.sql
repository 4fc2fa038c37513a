-- The durable outbox: one row per email (event and recipient), written in
-- the transaction of the event that causes it; delivered by a job.

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_key       TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    upload_id       INTEGER REFERENCES uploads (id),
    to_addr         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    text_body       TEXT    NOT NULL,
    html_body       TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    CONSTRAINT outbox_event_key_key UNIQUE (event_key)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_upload ON outbox (upload_id);
