-- Tenants: every row carries its tenant and ids are unique per tenant (see ../sqlite). Rows
-- written before tenants existed move to the tenant `local`. The default only fills the
-- existing rows: it is dropped so that every write must name its tenant.
ALTER TABLE concept_images DROP CONSTRAINT concept_images_concept_id_fkey;
ALTER TABLE concept_images DROP CONSTRAINT concept_images_pkey;
ALTER TABLE concepts DROP CONSTRAINT concepts_pkey;

ALTER TABLE concepts ADD COLUMN tenant TEXT NOT NULL DEFAULT 'local';
ALTER TABLE concept_images ADD COLUMN tenant TEXT NOT NULL DEFAULT 'local';
ALTER TABLE concepts ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE concept_images ALTER COLUMN tenant DROP DEFAULT;

ALTER TABLE concepts ADD PRIMARY KEY (tenant, id);
ALTER TABLE concept_images ADD PRIMARY KEY (tenant, concept_id, position);
ALTER TABLE concept_images ADD FOREIGN KEY (tenant, concept_id)
    REFERENCES concepts (tenant, id) ON DELETE CASCADE;

CREATE TABLE IF NOT EXISTS edge_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
