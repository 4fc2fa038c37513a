-- How often a build check's job ended without the check starting (its
-- worker could not fetch the archive, say). Part of the job's idempotency
-- key, so the reconcile sweep can give such a check a fresh job.

ALTER TABLE checks ADD COLUMN start_failures BIGINT NOT NULL DEFAULT 0;
