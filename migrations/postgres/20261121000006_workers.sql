-- Check workers (not apalis' own Workers table), each under a name unique to its process, with a heartbeat
-- and the check it is running.

CREATE TABLE check_workers (
    name          TEXT    PRIMARY KEY,
    platform      TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    pid           BIGINT  NOT NULL,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    current_check BIGINT
);
