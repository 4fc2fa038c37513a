-- A check that could not run for a reason that is not its package's (an
-- infrastructure error) waits in `pending` until `retry_at`, with the reason,
-- the message, the worker where it happened, since when it has waited, and
-- how many times in a row it failed so (the backoff's exponent).
ALTER TABLE checks ADD COLUMN retry_at BIGINT;
ALTER TABLE checks ADD COLUMN infra_reason TEXT;
ALTER TABLE checks ADD COLUMN infra_message TEXT;
ALTER TABLE checks ADD COLUMN infra_worker TEXT;
ALTER TABLE checks ADD COLUMN infra_since BIGINT;
ALTER TABLE checks ADD COLUMN infra_failures BIGINT NOT NULL DEFAULT 0;
