-- Conversations and their turns (issue 17). A turn keeps text, cue sets and a trace summary as
-- JSON text, and its image's SHA-256, never the image. Rows are removed by explicit deletes in
-- the registry's transactions (a concept's or a conversation's), as for concept_images.
-- Every row carries its tenant (after 20261203120000_tenants): all access is scoped by it.
CREATE TABLE IF NOT EXISTS conversations (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE IF NOT EXISTS conversation_turns (
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    image_sha256 TEXT,
    raw_cues TEXT,
    refined_cues TEXT,
    trace TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, conversation_id, position)
);

-- The concepts a turn used: the conversation's scope, and what a concept's deletion removes.
CREATE TABLE IF NOT EXISTS conversation_turn_concepts (
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    ordinal BIGINT NOT NULL,
    concept_id TEXT NOT NULL,
    PRIMARY KEY (tenant, conversation_id, position, ordinal)
);
CREATE INDEX IF NOT EXISTS conversation_turn_concepts_by_concept
    ON conversation_turn_concepts (tenant, concept_id);

-- The conversation's pseudonyms: the concept at ordinal k is <c{k+1}> in every turn.
CREATE TABLE IF NOT EXISTS conversation_aliases (
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    ordinal BIGINT NOT NULL,
    concept_id TEXT NOT NULL,
    PRIMARY KEY (tenant, conversation_id, ordinal)
);
CREATE INDEX IF NOT EXISTS conversation_aliases_by_concept
    ON conversation_aliases (tenant, concept_id);
