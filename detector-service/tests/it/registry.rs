//! The registry on a real SQLite file and a real PostgreSQL, through the same code.

use shared_types::ConceptId;
use slc_detector::registry::{
    Backend, EmbeddedImages, NewImage, Registry, RegistryError, RegistryOptions,
};
use slc_detector::tenants::TenantId;
use sqlx::Row;

fn id(raw: &str) -> ConceptId {
    ConceptId::parse(raw).unwrap()
}

fn ids(raw: &[&str]) -> Vec<ConceptId> {
    raw.iter().map(|one| id(one)).collect()
}

use crate::helpers::{fresh_postgres_schema, postgres_url, solid_png};

fn images(colours: &[[u8; 3]]) -> EmbeddedImages {
    EmbeddedImages {
        images: colours
            .iter()
            .map(|colour| {
                let bytes = solid_png(*colour, 4, 3);
                NewImage {
                    sha256: format!("{:x}", sha2_digest(&bytes)),
                    content_type: "image/png".into(),
                    width: 4,
                    height: 3,
                    bytes,
                }
            })
            .collect(),
        embedding: vec![0.25, -1.5, 3.0],
        clip_model: "clip-test".into(),
    }
}

fn sha2_digest(bytes: &[u8]) -> impl std::fmt::LowerHex {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
}

fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw).unwrap()
}

async fn exercise(all: &Registry) {
    let registry = &all.scoped(tenant("alice"));
    let record = registry
        .insert(
            &id("bo"),
            "<bo> is a Shiba Inu.",
            images(&[[255, 0, 0], [0, 255, 0]]),
        )
        .await
        .unwrap();
    assert_eq!(record.concept.id, "bo");
    assert_eq!(record.id, id("bo"));
    assert_eq!(record.embedding, vec![0.25, -1.5, 3.0]);
    assert_eq!(record.clip_model, "clip-test");
    assert_eq!(record.concept.images.len(), 2);
    assert_eq!(record.concept.images[1].index, 1);
    assert_eq!(record.concept.images[0].width, 4);
    assert!(record.concept.created_at.ends_with('Z'));

    let duplicate = registry
        .insert(&id("bo"), "again", images(&[[1, 2, 3]]))
        .await;
    assert!(matches!(duplicate, Err(RegistryError::AlreadyExists(taken)) if taken == id("bo")));

    let (content_type, bytes) = registry.image(&id("bo"), 1).await.unwrap().unwrap();
    assert_eq!(content_type, "image/png");
    assert_eq!(bytes, solid_png([0, 255, 0], 4, 3));
    assert!(registry.image(&id("bo"), 2).await.unwrap().is_none());

    registry
        .insert(&id("mam"), "<mam> is a grey cat.", images(&[[9, 9, 9]]))
        .await
        .unwrap();
    let listed = registry.list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| c.concept.id.as_str())
            .collect::<Vec<_>>(),
        ["bo", "mam"]
    );
    let many = registry
        .get_many(&ids(&["mam", "bo"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(many[0].concept.id, "mam");
    let missing = registry
        .get_many(&ids(&["bo", "rex", "zed"]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(missing, ids(&["rex", "zed"]));

    let updated = registry
        .update(&id("bo"), "<bo> wears a black collar.", None)
        .await
        .unwrap();
    assert_eq!(updated.concept.description, "<bo> wears a black collar.");
    assert_eq!(
        updated.concept.images.len(),
        2,
        "images kept without new ones"
    );
    let replaced = registry
        .update(&id("bo"), "<bo> again.", Some(images(&[[7, 7, 7]])))
        .await
        .unwrap();
    assert_eq!(replaced.concept.images.len(), 1);
    assert!(matches!(
        registry.update(&id("rex"), "x", None).await,
        Err(RegistryError::NotFound(_))
    ));

    registry.delete(&id("bo")).await.unwrap();
    assert!(registry.get(&id("bo")).await.unwrap().is_none());
    assert!(matches!(
        registry.delete(&id("bo")).await,
        Err(RegistryError::NotFound(_))
    ));
    assert_eq!(all.row_counts().await.unwrap(), (1, 1));
    exercise_tenants(all).await;
}

/// Ids are unique per tenant, and no tenant's query reaches another's rows.
async fn exercise_tenants(all: &Registry) {
    let alice = all.scoped(tenant("alice"));
    let bob = all.scoped(tenant("bob"));
    assert!(bob.list().await.unwrap().is_empty());
    assert!(bob.get(&id("mam")).await.unwrap().is_none());
    assert!(bob.image(&id("mam"), 0).await.unwrap().is_none());
    assert!(matches!(
        bob.delete(&id("mam")).await,
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        bob.update(&id("mam"), "taken over", None).await,
        Err(RegistryError::NotFound(_))
    ));
    bob.insert(
        &id("mam"),
        "<mam> is bob's parrot.",
        images(&[[1, 1, 1], [2, 2, 2]]),
    )
    .await
    .unwrap();
    assert_eq!(
        alice
            .get(&id("mam"))
            .await
            .unwrap()
            .unwrap()
            .concept
            .description,
        "<mam> is a grey cat."
    );
    assert_eq!(bob.ids().await.unwrap(), ids(&["mam"]));
    assert_eq!(alice.concept_count().await.unwrap(), 1);
    assert_eq!(all.row_counts().await.unwrap(), (2, 3));
    let usage = all.tenants_usage().await.unwrap();
    assert_eq!(
        usage
            .iter()
            .map(|u| (u.tenant.as_str(), u.concepts, u.images))
            .collect::<Vec<_>>(),
        [("alice", 1, 1), ("bob", 1, 2)]
    );
    let removed = all.delete_tenant(&tenant("bob")).await.unwrap();
    assert_eq!((removed.concepts, removed.images), (1, 2));
    assert!(bob.list().await.unwrap().is_empty());
    assert_eq!(all.row_counts().await.unwrap(), (1, 1));
}

#[tokio::test]
async fn registry_round_trips_on_sqlite_in_wal_mode() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("r.db").display()
    );
    let registry = Registry::connect(&url, RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(registry.backend(), Backend::Sqlite);
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(registry.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(mode, "wal");
    exercise(&registry).await;
    registry.close().await;
    // Reopening applies no migration twice and keeps the data.
    let reopened = Registry::connect(&url, RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(reopened.row_counts().await.unwrap(), (1, 1));
}

#[tokio::test]
async fn registry_round_trips_on_postgres() {
    let Some(base) = postgres_url() else { return };
    let url = fresh_postgres_schema(&base).await;
    let registry = Registry::connect(&url, RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(registry.backend(), Backend::Postgres);
    exercise(&registry).await;
    registry.close().await;
    let reopened = Registry::connect(&url, RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(reopened.row_counts().await.unwrap(), (1, 1));
}

#[tokio::test]
async fn unsupported_database_urls_are_refused() {
    let error = Registry::connect("mysql://localhost/x", RegistryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::UnsupportedUrl(_)));
}
