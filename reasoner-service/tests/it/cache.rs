//! The identity cache survives a restart, on an SQLite file and on PostgreSQL, with the same
//! code and migrations.

use serde_json::json;

use crate::helpers::*;
use crate::paper::*;

/// Two servers, one after the other, on the same database: the second asks the model nothing.
async fn cache_survives_a_restart(database_url: &str) {
    let upstream =
        ScriptedUpstream::answering(FIGURE_8_IDENTITIES, |_| "yes yes".into(), "ok").await;
    let request = json!({"concepts": [
        {"id": "<tr>", "description": FIGURE_8_TR},
        {"id": "<ys>", "description": FIGURE_8_YS},
    ]});

    let first = spawn_config(base_config(&upstream.base_url(), database_url)).await;
    let (status, before) = first.post("/v1/identities", &request).await;
    assert_eq!(status, 200, "{before}");
    // One Table 7 call per concept.
    assert_eq!(before["upstream"]["calls"], 2);
    assert_eq!(before["upstream"]["identity_cache_hits"], 0);
    assert_eq!(first.state.reasoner.cache.row_count().await.unwrap(), 2);
    first.stop().await;

    // Migrations run again on start and must accept the existing tables.
    let second = spawn_config(base_config(&upstream.base_url(), database_url)).await;
    let (status, after) = second.post("/v1/identities", &request).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["upstream"]["calls"], 0);
    assert_eq!(after["upstream"]["identity_cache_hits"], 2);
    assert_eq!(after["identities"], before["identities"]);
    assert_eq!(
        after["identities"]["<tr>"]["attributes"],
        FIGURE_8_IDENTITIES[0].2
    );
    assert_eq!(upstream.requests().len(), 2);

    // The key includes the model: another model extracts again.
    let mut other_model = base_config(&upstream.base_url(), database_url);
    other_model.llm_model = "another-vlm".into();
    second.stop().await;
    let third = spawn_config(other_model).await;
    let (status, body) = third.post("/v1/identities", &request).await;
    assert_eq!(status, 200);
    assert_eq!(body["upstream"]["identity_cache_hits"], 0);
    assert_eq!(upstream.requests().len(), 4);
    assert_eq!(third.state.reasoner.cache.row_count().await.unwrap(), 4);
    third.stop().await;
}

#[tokio::test]
async fn the_identity_cache_survives_a_restart_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let url = sqlite_url(&directory.path().join("cache.db"));
    cache_survives_a_restart(&url).await;
    assert!(directory.path().join("cache.db").exists());
}

#[tokio::test]
async fn the_identity_cache_survives_a_restart_on_postgres() {
    let Ok(base) = std::env::var("SLC_TEST_POSTGRES_URL") else {
        if std::env::var("SLC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("SLC_REQUIRE_POSTGRES=1 but SLC_TEST_POSTGRES_URL is unset");
        }
        eprintln!("note: SLC_TEST_POSTGRES_URL is unset; skipping the PostgreSQL cache test");
        return;
    };
    // A fresh schema per run, so that a database that already has the tables is no problem.
    let schema = format!(
        "reasoner_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let admin = sqlx::PgPool::connect(&base).await.expect("PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    cache_survives_a_restart(&url).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'identity_cache'",
    )
    .bind(&schema)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(tables, 1, "the cache lived in the test's own schema");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
