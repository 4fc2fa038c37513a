-- Mirrors (SPEC section 10): what a follower's package pages show beyond
-- the index documents. `mirror_pages` keeps each package's record as the
-- primary served it (history, description, license, build metadata per
-- version and platform) with the columns its listing reads; written in the
-- transaction that puts the package's document and the serial.
CREATE TABLE mirror_pages (
    name        TEXT PRIMARY KEY,
    -- The latest version its document names ('' when it has none).
    version     TEXT NOT NULL,
    description TEXT NOT NULL,
    state       TEXT NOT NULL,
    record      TEXT NOT NULL
);

-- What each mirrored package's latest version depends on, kept with its
-- document: a follower answers "who depends on Y" from these rows, since a
-- promotion of X changes Y's dependents without touching Y's document.
CREATE TABLE mirror_dependencies (
    name       TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    CONSTRAINT mirror_dependencies_pkey PRIMARY KEY (name, depends_on)
);

CREATE INDEX mirror_dependencies_depends_on ON mirror_dependencies (depends_on, name);
