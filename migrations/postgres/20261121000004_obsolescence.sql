-- Obsolescence: why a package is obsolete and what replaces it; the
-- max-version pins recorded on its dependents. A removed package keeps its
-- row (state 'removed') for history; its versions go.

ALTER TABLE packages ADD COLUMN obsolete_reason TEXT;
ALTER TABLE packages ADD COLUMN replacement TEXT;
ALTER TABLE packages ADD COLUMN obsoleted_at BIGINT;

CREATE TABLE pins (
    dependent_id  BIGINT  NOT NULL REFERENCES packages (id),
    dependency_id BIGINT  NOT NULL REFERENCES packages (id),
    max_version   TEXT    NOT NULL,
    requirement   TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    CONSTRAINT pins_pkey PRIMARY KEY (dependent_id, dependency_id)
);
CREATE INDEX pins_dependency ON pins (dependency_id);
