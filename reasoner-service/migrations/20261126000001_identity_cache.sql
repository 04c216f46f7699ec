-- Concept identities (paper Table 7) extracted by the large model, keyed by the model that
-- extracted them and the SHA-256 of the description they came from. Written for both SQLite
-- and PostgreSQL: the same migration runs on either through sqlx's Any driver.
CREATE TABLE IF NOT EXISTS identity_cache (
    model TEXT NOT NULL,
    description_sha256 TEXT NOT NULL,
    category TEXT NOT NULL,
    attributes TEXT NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (model, description_sha256)
);
