//! Responses on disk, keyed by the SHA-256 of the exact request, so an interrupted or
//! partly failed run picks up where it stopped and a finished one re-scores for free.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared_types::{AskRequest, AskResponse};

use crate::error::{EvalError, Result};

#[derive(Debug, Clone)]
pub struct ResponseCache {
    folder: PathBuf,
    /// Mixed into every key: change it (e.g. to the model's name) to re-ask everything.
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedResponse {
    request_hash: String,
    response: AskResponse,
}

impl ResponseCache {
    pub fn new(folder: impl Into<PathBuf>, salt: impl Into<String>) -> Self {
        ResponseCache {
            folder: folder.into(),
            salt: salt.into(),
        }
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn request_hash(&self, request: &AskRequest) -> String {
        let mut hasher = Sha256::new();
        hasher.update(serde_json::to_vec(request).expect("AskRequest serializes"));
        hasher.update([0u8]);
        hasher.update(self.salt.as_bytes());
        format!("{:x}", hasher.finalize())
    }

    fn path_for(&self, hash: &str) -> PathBuf {
        self.folder.join(&hash[..2]).join(format!("{hash}.json"))
    }

    /// A cached response, or `None` when absent or unreadable (then the item is asked again).
    pub fn get(&self, hash: &str) -> Option<AskResponse> {
        let text = std::fs::read_to_string(self.path_for(hash)).ok()?;
        let cached: CachedResponse = serde_json::from_str(&text).ok()?;
        (cached.request_hash == hash).then_some(cached.response)
    }

    /// Writes through a temporary file and a rename, so a killed run never leaves half a file.
    pub fn put(&self, hash: &str, response: &AskResponse) -> Result<()> {
        let path = self.path_for(hash);
        let folder = path.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(folder).map_err(|source| EvalError::io(folder, source))?;
        let temporary = path.with_extension("json.tmp");
        let body = serde_json::to_vec(&CachedResponse {
            request_hash: hash.to_string(),
            response: response.clone(),
        })
        .expect("AskResponse serializes");
        std::fs::write(&temporary, body).map_err(|source| EvalError::io(&temporary, source))?;
        std::fs::rename(&temporary, &path).map_err(|source| EvalError::io(&path, source))
    }
}
