-- The edge's concept registry. Timestamps are RFC 3339 text and embeddings little-endian f32
-- bytes, so that SQLite and PostgreSQL share the same queries (see ../postgres).
CREATE TABLE IF NOT EXISTS concepts (
    id TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL,
    embedding BLOB NOT NULL,
    embedding_dim BIGINT NOT NULL,
    clip_model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS concept_images (
    concept_id TEXT NOT NULL REFERENCES concepts (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (concept_id, position)
);
