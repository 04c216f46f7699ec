//! Conversations and scenarios in the registry, on a real SQLite file and a real PostgreSQL,
//! through the same code: turns in order with their concepts and pseudonyms, the scope, and
//! what deleting a concept or a conversation leaves (nothing of theirs).

use std::collections::BTreeMap;

use shared_types::{ConceptId, Cue, Mode, ReflectionAction, TurnSummary};
use slc_detector::registry::{
    EmbeddedImages, NewImage, NewTurn, Registry, RegistryError, RegistryOptions, ScopedRegistry,
};
use slc_detector::tenants::TenantId;

use crate::helpers::{fresh_postgres_schema, postgres_url, solid_png};

/// The registry as tenant `alice` sees it.
fn alice(registry: &Registry) -> ScopedRegistry {
    registry.scoped(TenantId::parse("alice").unwrap())
}

fn id(raw: &str) -> ConceptId {
    ConceptId::parse(raw).unwrap()
}

fn one_image() -> EmbeddedImages {
    let bytes = solid_png([1, 2, 3], 2, 2);
    EmbeddedImages {
        images: vec![NewImage {
            sha256: "ab".repeat(32),
            content_type: "image/png".into(),
            width: 2,
            height: 2,
            bytes,
        }],
        embedding: vec![1.0, 0.0],
        clip_model: "clip-test".into(),
    }
}

fn turn(question: &str, concepts: &[&str], aliases: Option<&[&str]>) -> NewTurn {
    let cues = BTreeMap::from([(
        format!("<{}>", concepts.first().copied().unwrap_or("x")),
        Cue {
            present: true,
            location_absolute: Some("center".into()),
            location_relative: None,
            bbox: None,
        },
    )]);
    NewTurn {
        question: question.into(),
        answer: format!("answer to {question}"),
        image_sha256: Some("cd".repeat(32)),
        concepts: concepts.iter().map(|c| id(c)).collect(),
        raw_cues: Some(cues.clone()),
        refined_cues: Some(cues),
        trace: TurnSummary {
            mode: Mode::Full,
            adapter: None,
            scenario: None,
            actions: BTreeMap::from([("<bo>".to_string(), ReflectionAction::Kept)]),
            upstream_calls: 3,
            prompt_tokens: 10,
            completion_tokens: 5,
            history: None,
            total_ms: 1.5,
        },
        aliases: aliases.map(|ids| ids.iter().map(|c| id(c)).collect()),
    }
}

async fn exercise_conversations(registry: &ScopedRegistry) {
    for concept in ["bo", "mam", "lina"] {
        registry
            .insert(&id(concept), &format!("<{concept}> is here."), one_image())
            .await
            .unwrap();
    }
    let conversation = registry.create_conversation().await.unwrap();
    assert!(conversation.id.starts_with("conv_"));
    let other = registry.create_conversation().await.unwrap();
    assert_ne!(conversation.id, other.id);

    let first = turn("Where is <bo>?", &["bo"], Some(&["bo"]));
    assert_eq!(
        registry
            .append_turn(&conversation.id, &first)
            .await
            .unwrap(),
        Some(0)
    );
    let second = turn("And <mam>?", &["mam", "lina"], Some(&["bo", "mam", "lina"]));
    assert_eq!(
        registry
            .append_turn(&conversation.id, &second)
            .await
            .unwrap(),
        Some(1)
    );
    // A turn without pseudonyms leaves the stored ones as they are.
    let third = turn("Is he there?", &["bo"], None);
    assert_eq!(
        registry
            .append_turn(&conversation.id, &third)
            .await
            .unwrap(),
        Some(2)
    );
    registry
        .append_turn(&other.id, &turn("Hi <lina>", &["lina"], Some(&["lina"])))
        .await
        .unwrap();

    let stored = registry
        .conversation(&conversation.id)
        .await
        .unwrap()
        .unwrap();
    let questions: Vec<&str> = stored.turns.iter().map(|t| t.question.as_str()).collect();
    assert_eq!(questions, ["Where is <bo>?", "And <mam>?", "Is he there?"]);
    assert_eq!(stored.turns[1].concepts, ["<mam>", "<lina>"]);
    assert_eq!(stored.turns[1].index, 1);
    assert_eq!(stored.turns[0].raw_cues, first.raw_cues);
    assert_eq!(stored.turns[0].trace, first.trace);
    assert_eq!(
        stored.turns[0].image_sha256.as_deref(),
        Some("cd".repeat(32).as_str())
    );
    let newest_two = registry
        .conversation_turns(&conversation.id, Some(2))
        .await
        .unwrap();
    assert_eq!(
        newest_two.iter().map(|t| t.index).collect::<Vec<_>>(),
        [1, 2]
    );

    let scope = registry
        .conversation_scope(&conversation.id, 2)
        .await
        .unwrap();
    assert_eq!(scope, [id("bo"), id("mam"), id("lina")]);
    let scope = registry
        .conversation_scope(&conversation.id, 1)
        .await
        .unwrap();
    assert_eq!(scope, [id("bo")]);
    let aliases = registry
        .conversation_aliases(&conversation.id)
        .await
        .unwrap();
    assert_eq!(aliases, [id("bo"), id("mam"), id("lina")]);

    // Deleting a concept deletes the turns that used it and its pseudonyms, everywhere.
    registry.delete(&id("lina")).await.unwrap();
    let stored = registry
        .conversation(&conversation.id)
        .await
        .unwrap()
        .unwrap();
    let indexes: Vec<u32> = stored.turns.iter().map(|t| t.index).collect();
    assert_eq!(indexes, [0, 2]);
    assert!(
        registry
            .conversation(&other.id)
            .await
            .unwrap()
            .unwrap()
            .turns
            .is_empty()
    );
    let aliases = registry
        .conversation_aliases(&conversation.id)
        .await
        .unwrap();
    assert_eq!(aliases, [id("bo"), id("mam")]);
    // The next turn comes after the newest, not in a gap.
    let fourth = turn("Still?", &["bo"], None);
    assert_eq!(
        registry
            .append_turn(&conversation.id, &fourth)
            .await
            .unwrap(),
        Some(3)
    );

    // Deleting a conversation leaves nothing of it; a deleted one takes no turns.
    assert!(
        registry
            .delete_conversation(&conversation.id)
            .await
            .unwrap()
    );
    assert!(
        !registry
            .delete_conversation(&conversation.id)
            .await
            .unwrap()
    );
    assert!(
        registry
            .conversation(&conversation.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        registry
            .append_turn(&conversation.id, &fourth)
            .await
            .unwrap(),
        None
    );
    assert!(registry.delete_conversation(&other.id).await.unwrap());
    assert_eq!(
        registry.registry().conversation_row_counts().await.unwrap(),
        [0, 0, 0, 0]
    );
}

async fn exercise_scenarios(registry: &ScopedRegistry) {
    let created = registry
        .insert_scenario(&id("family"), "home", &[id("bo"), id("mam")])
        .await
        .unwrap();
    assert_eq!(created.members, [id("bo"), id("mam")]);
    assert_eq!(created.scenario.concepts, ["bo", "mam"]);
    assert_eq!(created.scenario.revision, 1);
    assert!(matches!(
        registry
            .insert_scenario(&id("family"), "", &[id("bo")])
            .await,
        Err(RegistryError::ScenarioExists(_))
    ));
    let updated = registry
        .update_scenario(&id("family"), "just mam", &[id("mam")])
        .await
        .unwrap();
    assert_eq!((updated.scenario.revision, updated.members.len()), (2, 1));
    assert_eq!(updated.scenario.description, "just mam");
    registry
        .insert_scenario(&id("pets"), "", &[id("bo"), id("mam")])
        .await
        .unwrap();
    // New images for a member change its scenarios' revision (their Eq. 1 embedding moved).
    registry
        .update(&id("mam"), "<mam> again", Some(one_image()))
        .await
        .unwrap();
    let family = registry.scenario(&id("family")).await.unwrap().unwrap();
    assert_eq!(family.scenario.revision, 3);
    // A deleted member leaves its scenarios, which get a new revision.
    registry.delete(&id("mam")).await.unwrap();
    let pets = registry.scenario(&id("pets")).await.unwrap().unwrap();
    assert_eq!(
        (pets.members.clone(), pets.scenario.revision),
        (vec![id("bo")], 3)
    );
    let listed: Vec<String> = registry
        .scenarios()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.scenario.id)
        .collect();
    assert_eq!(listed, ["family", "pets"]);
    registry.delete_scenario(&id("family")).await.unwrap();
    assert!(matches!(
        registry.delete_scenario(&id("family")).await,
        Err(RegistryError::ScenarioNotFound(_))
    ));
    assert!(matches!(
        registry
            .update_scenario(&id("family"), "", &[id("bo")])
            .await,
        Err(RegistryError::ScenarioNotFound(_))
    ));
    assert!(registry.scenario(&id("family")).await.unwrap().is_none());
}

#[tokio::test]
async fn conversations_and_scenarios_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("c.db").display()
    );
    let registry = Registry::connect(&url, RegistryOptions::default())
        .await
        .unwrap();
    // Twice, as two tenants: the same ids again are another tenant's own rows.
    for tenant in ["alice", "bob"] {
        let scoped = registry.scoped(TenantId::parse(tenant).unwrap());
        exercise_conversations(&scoped).await;
        exercise_scenarios(&scoped).await;
    }
}

#[tokio::test]
async fn conversations_and_scenarios_on_postgres() {
    let Some(base) = postgres_url() else { return };
    let url = fresh_postgres_schema(&base).await;
    let registry = Registry::connect(&url, RegistryOptions::default())
        .await
        .unwrap();
    // Twice, as two tenants: the same ids again are another tenant's own rows.
    for tenant in ["alice", "bob"] {
        let scoped = registry.scoped(TenantId::parse(tenant).unwrap());
        exercise_conversations(&scoped).await;
        exercise_scenarios(&scoped).await;
    }
}

#[tokio::test]
async fn concurrent_turns_of_one_conversation_get_distinct_indexes() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("c.db").display()
    );
    let registry = alice(
        &Registry::connect(&url, RegistryOptions::default())
            .await
            .unwrap(),
    );
    registry
        .insert(&id("bo"), "<bo>", one_image())
        .await
        .unwrap();
    let conversation = registry.create_conversation().await.unwrap();
    let appends = (0..8).map(|n| {
        let registry = registry.clone();
        let id = conversation.id.clone();
        async move {
            registry
                .append_turn(&id, &turn(&format!("q{n}"), &["bo"], None))
                .await
                .unwrap()
                .unwrap()
        }
    });
    let mut indexes = futures_util::future::join_all(appends).await;
    indexes.sort_unstable();
    assert_eq!(indexes, (0..8).collect::<Vec<u32>>());
}
