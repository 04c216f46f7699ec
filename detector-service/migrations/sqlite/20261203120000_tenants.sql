-- Tenants: every row carries its tenant and ids are unique per tenant. SQLite cannot change
-- a primary key in place, so both tables are rebuilt; every row written before tenants existed
-- moves to the tenant `local` (keyless mode's tenant, and that of keys without a prefix).
ALTER TABLE concept_images RENAME TO concept_images_v1;
ALTER TABLE concepts RENAME TO concepts_v1;

CREATE TABLE concepts (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    description TEXT NOT NULL,
    embedding BLOB NOT NULL,
    embedding_dim BIGINT NOT NULL,
    clip_model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE concept_images (
    tenant TEXT NOT NULL,
    concept_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (tenant, concept_id, position),
    FOREIGN KEY (tenant, concept_id) REFERENCES concepts (tenant, id) ON DELETE CASCADE
);

INSERT INTO concepts (tenant, id, description, embedding, embedding_dim, clip_model, created_at, updated_at)
    SELECT 'local', id, description, embedding, embedding_dim, clip_model, created_at, updated_at
    FROM concepts_v1;
INSERT INTO concept_images (tenant, concept_id, position, sha256, content_type, width, height, bytes)
    SELECT 'local', concept_id, position, sha256, content_type, width, height, bytes
    FROM concept_images_v1;

DROP TABLE concept_images_v1;
DROP TABLE concepts_v1;

-- Per-edge secrets; `cache_partition` keys the opaque per-tenant value sent to the reasoner.
CREATE TABLE IF NOT EXISTS edge_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
