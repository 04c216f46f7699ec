//! The harness's one error enum. Every variant names the file or item it is about, so a
//! failed run says exactly what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: unknown evaluation file format: {detail}")]
    UnknownFormat { path: PathBuf, detail: String },
    #[error("item {item}: {message}")]
    BadItem { item: String, message: String },
    #[error("item {item}: image {reference:?} not found (tried {tried})")]
    MissingImage {
        item: String,
        reference: String,
        tried: String,
    },
    #[error("concepts file {path}: {message}")]
    ConceptsFile { path: PathBuf, message: String },
    #[error("{context}: edge answered HTTP {status} ({kind}): {message}")]
    Edge {
        context: String,
        status: u16,
        kind: String,
        message: String,
    },
    #[error("{context}: cannot reach the edge at {url}: {source}")]
    Transport {
        context: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot draw the chart {path}: {message}")]
    Chart { path: PathBuf, message: String },
    #[error("invalid option: {0}")]
    Usage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EvalError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn bad_item(item: impl Into<String>, message: impl Into<String>) -> Self {
        EvalError::BadItem {
            item: item.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
