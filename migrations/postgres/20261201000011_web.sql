-- The web pages (SPEC section 8a): sign-in sessions, and the package
-- website's full-text search index.

-- A signed-in browser. The cookie carries a random id; only its sha256 is
-- stored, as for API tokens. Every form of the session carries `csrf`.
-- Revoking the token a session was signed in with ends the session.
CREATE TABLE web_sessions (
    id_hash    TEXT   NOT NULL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id   BIGINT NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

-- One row per stable package: its name, latest version and that version's
-- description, kept by the triggers below in the transaction that promotes
-- or removes a version.
CREATE TABLE package_search (
    package_id  BIGINT NOT NULL PRIMARY KEY REFERENCES packages (id) ON DELETE CASCADE,
    name        TEXT   NOT NULL,
    version     TEXT   NOT NULL,
    description TEXT   NOT NULL,
    document    tsvector GENERATED ALWAYS AS (
        -- Angle brackets go: the parser would read `<script>…</script>` as
        -- markup and drop what is inside; the description is plain text.
        to_tsvector('simple', name || ' ' || translate(name, '-_', '  ') || ' ' || translate(description, '<>', '  '))
    ) STORED
);
CREATE INDEX package_search_document ON package_search USING GIN (document);

CREATE FUNCTION package_search_description(manifest TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN COALESCE(manifest::jsonb ->> 'description', '');
EXCEPTION WHEN others THEN
    RETURN '';
END $$;

INSERT INTO package_search (package_id, name, version, description)
SELECT p.id, p.name, v.version, package_search_description(v.manifest)
FROM packages p
JOIN versions v ON v.id = (SELECT MAX(id) FROM versions WHERE package_id = p.id);

-- Versions only ever grow (a lower version is refused): the inserted one
-- is the latest.
CREATE FUNCTION package_search_on_promote() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO package_search (package_id, name, version, description)
    SELECT NEW.package_id, p.name, NEW.version, package_search_description(NEW.manifest)
    FROM packages p WHERE p.id = NEW.package_id
    ON CONFLICT (package_id) DO UPDATE
        SET name = EXCLUDED.name, version = EXCLUDED.version, description = EXCLUDED.description;
    RETURN NEW;
END $$;
CREATE TRIGGER package_search_on_promote AFTER INSERT ON versions
    FOR EACH ROW EXECUTE FUNCTION package_search_on_promote();

CREATE FUNCTION package_search_on_remove() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM versions WHERE package_id = OLD.package_id) THEN
        DELETE FROM package_search WHERE package_id = OLD.package_id;
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER package_search_on_remove AFTER DELETE ON versions
    FOR EACH ROW EXECUTE FUNCTION package_search_on_remove();

-- The page of an upload reads its events; the queue page its latest verdicts.
CREATE INDEX events_upload_id ON events (upload_id, id);
CREATE INDEX uploads_updated_at ON uploads (updated_at);
