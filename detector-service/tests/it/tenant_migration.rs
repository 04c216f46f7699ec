//! The tenants migration on a database written by the release before tenants: its schema
//! (the first migration, applied by sqlx as that release did) and its rows (written with that
//! release's statements, verbatim). Every row must arrive in the tenant `local`, unchanged.

use shared_types::ConceptId;
use slc_detector::registry::{Registry, RegistryOptions};
use slc_detector::tenants::TenantId;

use crate::helpers::{fresh_postgres_schema, postgres_url, solid_png};

/// The release's first migration, as committed, in a directory of its own.
fn release_migrations(backend: &str) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let name = "20261126000001_concepts.sql";
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
        .join(name);
    std::fs::copy(source, directory.path().join(name)).unwrap();
    directory
}

fn embedding_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// Writes two concepts (one with two images) the way the release's `Registry::insert` did.
async fn write_as_release(pool: &sqlx::AnyPool) {
    let concepts = [
        (
            "bo",
            "<bo> is a Shiba Inu.",
            vec![[200u8, 10, 10], [10, 200, 10]],
        ),
        ("mam", "<mam> is a grey cat.", vec![[90u8, 90, 90]]),
    ];
    for (id, description, colours) in concepts {
        sqlx::query(
            "INSERT INTO concepts (id, description, embedding, embedding_dim, clip_model, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(description)
        .bind(embedding_bytes(&[0.5, -0.25, 1.0]))
        .bind(3i64)
        .bind("clip-test")
        .bind("2026-11-30T10:00:00Z")
        .bind("2026-11-30T11:00:00Z")
        .execute(pool)
        .await
        .unwrap();
        for (position, colour) in colours.iter().enumerate() {
            let bytes = solid_png(*colour, 5, 4);
            sqlx::query(
                "INSERT INTO concept_images (concept_id, position, sha256, content_type, width, \
                 height, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(format!("sha-{id}-{position}"))
            .bind("image/png")
            .bind(5i64)
            .bind(4i64)
            .bind(bytes)
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

async fn migrate_and_check(url: &str, backend: &str) {
    sqlx::any::install_default_drivers();
    let migrations = release_migrations(backend);
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(migrations.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    write_as_release(&pool).await;
    pool.close().await;

    let registry = Registry::connect(url, RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(registry.row_counts().await.unwrap(), (2, 3), "nothing lost");
    let local = registry.scoped(TenantId::local());
    let listed = local.list().await.unwrap();
    let bo = &listed[0];
    assert_eq!(bo.concept.id, "bo");
    assert_eq!(bo.concept.description, "<bo> is a Shiba Inu.");
    assert_eq!(bo.embedding, vec![0.5, -0.25, 1.0]);
    assert_eq!(bo.clip_model, "clip-test");
    assert_eq!(bo.concept.created_at, "2026-11-30T10:00:00Z");
    assert_eq!(bo.concept.updated_at, "2026-11-30T11:00:00Z");
    assert_eq!(bo.concept.images.len(), 2);
    assert_eq!(bo.concept.images[1].sha256, "sha-bo-1");
    assert_eq!(
        (bo.concept.images[1].width, bo.concept.images[1].height),
        (5, 4)
    );
    let bo_id = ConceptId::parse("bo").unwrap();
    let (content_type, bytes) = local.image(&bo_id, 1).await.unwrap().unwrap();
    assert_eq!(content_type, "image/png");
    assert_eq!(bytes, solid_png([10, 200, 10], 5, 4));
    assert_eq!(listed[1].concept.id, "mam");
    // Another tenant sees none of it and may use the same id.
    let alice = registry.scoped(TenantId::parse("alice").unwrap());
    assert!(alice.list().await.unwrap().is_empty());
    assert!(alice.image(&bo_id, 1).await.unwrap().is_none());
    // Every write names its tenant: the migration left no default behind.
    let unnamed = sqlx::query(
        "INSERT INTO concepts (id, description, embedding, embedding_dim, clip_model, \
         created_at, updated_at) VALUES ('x', 'x', $1, 0, 'c', 't', 't')",
    )
    .bind(Vec::<u8>::new())
    .execute(registry.pool())
    .await;
    assert!(unnamed.is_err(), "a row without a tenant was accepted");
    registry.close().await;
    // Reopening applies nothing twice.
    let reopened = Registry::connect(url, RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(reopened.row_counts().await.unwrap(), (2, 3));
}

#[tokio::test]
async fn the_tenants_migration_moves_a_release_sqlite_database_into_local() {
    let directory = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("release.sqlite").display()
    );
    migrate_and_check(&url, "sqlite").await;
}

#[tokio::test]
async fn the_tenants_migration_moves_a_release_postgres_database_into_local() {
    let Some(base) = postgres_url() else { return };
    let url = fresh_postgres_schema(&base).await;
    migrate_and_check(&url, "postgres").await;
}
