-- Scenarios: named groups of concepts (issue 17). `revision` grows whenever the members, or a
-- member's images, change; the edge's cached Eq. 1 adapter choice is keyed by it. Ids are
-- unique per tenant, as concept ids are.
CREATE TABLE IF NOT EXISTS scenarios (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    description TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE IF NOT EXISTS scenario_members (
    tenant TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    ordinal BIGINT NOT NULL,
    concept_id TEXT NOT NULL,
    PRIMARY KEY (tenant, scenario_id, ordinal)
);
CREATE INDEX IF NOT EXISTS scenario_members_by_concept ON scenario_members (tenant, concept_id);
