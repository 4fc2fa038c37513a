-- The per-package index documents themselves, written in the transaction
-- of the stable change that made them (until now they were files under
-- stable/index/, written after the commit and repaired after a crash).
-- Rows without a body yet (documents that were files) are filled in from
-- the tables when a server starts.
ALTER TABLE index_documents ADD COLUMN sha256 TEXT;
ALTER TABLE index_documents ADD COLUMN body TEXT;
CREATE INDEX index_documents_unwritten ON index_documents (package_id) WHERE body IS NULL;
