//! The registry's errors, and which of them mean "the database is unavailable right now"
//! (a 503 with Retry-After) rather than a fault.

use shared_types::ConceptId;
use sqlx::error::DatabaseError as _;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("concept {0} already exists")]
    AlreadyExists(ConceptId),
    #[error("concept {0} not found")]
    NotFound(ConceptId),
    #[error("scenario {0} already exists")]
    ScenarioExists(ConceptId),
    #[error("scenario {0} not found")]
    ScenarioNotFound(ConceptId),
    /// A stored row breaks an invariant every write keeps (an id that is not a concept id).
    #[error("a stored row is invalid: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite://FILE or postgres://...")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl RegistryError {
    /// Whether the database is only unavailable for now, so the client should retry rather
    /// than report a bug: SQLite busy, locked or full; PostgreSQL out of connections, out of
    /// disk, shutting down or unreachable; the pool exhausted or closed; an I/O failure.
    pub fn is_unavailable(&self) -> bool {
        let RegistryError::Database(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(database) => {
                if let Some(sqlite) = database.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    let primary = sqlite
                        .code()
                        .and_then(|code| code.parse::<i32>().ok())
                        .map(|code| code & 0xff);
                    matches!(primary, Some(SQLITE_BUSY | SQLITE_LOCKED | SQLITE_FULL))
                } else if let Some(postgres) =
                    database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                {
                    is_transient_sqlstate(postgres.code())
                } else {
                    false
                }
            }
            _ => false,
        }
    }
}

/// SQLite's primary result codes (`sqlite3.h`) for a lock held too long and a full disk.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_FULL: i32 = 13;

/// SQLSTATE classes and codes that say "not now" rather than "wrong": connection exceptions
/// (08), insufficient resources such as a full disk or too many connections (53), operator
/// intervention such as a shutdown (57P01–57P03), serialization failure and deadlock (40001,
/// 40P01).
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
