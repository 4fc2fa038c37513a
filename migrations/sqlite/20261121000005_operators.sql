-- Operators: every change of the pass mark (who, when, old, new, why, and
-- the whole pass mark after it), and the paused state of platforms.

CREATE TABLE passmark_changes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor_id  INTEGER REFERENCES users (id),
    key       TEXT    NOT NULL,
    old_value TEXT    NOT NULL,
    new_value TEXT    NOT NULL,
    why       TEXT    NOT NULL,
    passmark  TEXT    NOT NULL
);

CREATE TABLE platform_state (
    name       TEXT    PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    changed_at INTEGER NOT NULL
);
