-- Worker accounts: a platform worker on another machine fetches upload
-- archives from the server with a token of a user marked as a worker.

ALTER TABLE users ADD COLUMN is_worker BIGINT NOT NULL DEFAULT 0;
