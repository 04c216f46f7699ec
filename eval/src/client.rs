//! The edge's HTTP API as the harness uses it: the concept registry and `POST /v1/ask`.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use shared_types::{AskRequest, AskResponse, Concept, CreateConcept, ErrorBody, UpdateConcept};

use crate::concepts_file::ConceptToRegister;
use crate::error::{EvalError, Result};

#[derive(Debug, Clone)]
pub struct EdgeClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

/// What to do with a concept the edge already has but with other text or images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnExisting {
    /// Replace description and images (`PUT /v1/concepts/{id}`).
    #[default]
    Update,
    /// Leave the edge's version alone.
    Skip,
    /// Stop: the run would not measure the concepts the file describes.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Created,
    Unchanged,
    Updated,
    Skipped,
}

impl EdgeClient {
    pub fn new(base_url: &str, api_key: Option<String>, timeout: Duration) -> Result<Self> {
        // The workspace builds reqwest with rustls but no bundled crypto provider (the services
        // install ring); an edge behind HTTPS needs one here too. A second install is refused
        // harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| EvalError::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(EdgeClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{}", self.base_url, path));
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends and decodes. `Ok(None)` only for a 404 when `absent_is_ok` (a lookup); every
    /// other non-2xx becomes [`EvalError::Edge`] with the edge's `{"error": {type, message}}`.
    async fn send<T: DeserializeOwned>(
        &self,
        context: &str,
        builder: reqwest::RequestBuilder,
        absent_is_ok: bool,
    ) -> Result<Option<T>> {
        let transport = |source| EvalError::Transport {
            context: context.to_string(),
            url: self.base_url.clone(),
            source,
        };
        let response = builder.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            let value = serde_json::from_slice(&bytes).map_err(|e| EvalError::Edge {
                context: context.to_string(),
                status: status.as_u16(),
                kind: "invalid_response".into(),
                message: format!("the body does not match the contract: {e}"),
            })?;
            return Ok(Some(value));
        }
        if status == StatusCode::NOT_FOUND && absent_is_ok {
            return Ok(None);
        }
        let (kind, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (body.error.kind, body.error.message),
            Err(_) => (
                "unstructured".to_string(),
                String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            ),
        };
        Err(EvalError::Edge {
            context: context.to_string(),
            status: status.as_u16(),
            kind,
            message,
        })
    }

    pub async fn get_concept(&self, id: &str) -> Result<Option<Concept>> {
        let context = format!("GET /v1/concepts/{id}");
        let path = format!("/v1/concepts/{id}");
        self.send(&context, self.request(reqwest::Method::GET, &path), true)
            .await
    }

    pub async fn ask(&self, item_id: &str, request: &AskRequest) -> Result<AskResponse> {
        let context = format!("item {item_id}: POST /v1/ask");
        let builder = self.request(reqwest::Method::POST, "/v1/ask").json(request);
        let response = self.send(&context, builder, false).await?;
        Ok(response.expect("only lookups may be absent"))
    }

    /// Creates the concept, or reconciles it with the edge's copy per `on_existing`.
    pub async fn register(
        &self,
        concept: &ConceptToRegister,
        on_existing: OnExisting,
    ) -> Result<Registration> {
        let mut images = Vec::new();
        let mut hashes = Vec::new();
        for path in &concept.image_paths {
            let bytes = std::fs::read(path).map_err(|source| EvalError::io(path, source))?;
            hashes.push(format!("{:x}", Sha256::digest(&bytes)));
            images.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
        }
        let existing = self.get_concept(&concept.id).await?;
        let Some(existing) = existing else {
            let body = CreateConcept {
                id: concept.id.clone(),
                description: concept.description.clone(),
                images,
            };
            let context = format!("concept {}: POST /v1/concepts", concept.id);
            let builder = self
                .request(reqwest::Method::POST, "/v1/concepts")
                .json(&body);
            self.send::<Concept>(&context, builder, false).await?;
            return Ok(Registration::Created);
        };
        let existing_hashes: Vec<&str> =
            existing.images.iter().map(|i| i.sha256.as_str()).collect();
        let same = existing.description == concept.description
            && existing_hashes == hashes.iter().map(String::as_str).collect::<Vec<_>>();
        if same {
            return Ok(Registration::Unchanged);
        }
        match on_existing {
            OnExisting::Skip => Ok(Registration::Skipped),
            OnExisting::Fail => Err(EvalError::Usage(format!(
                "concept {} already exists on the edge with another description or images \
                 (use --on-existing update or skip)",
                concept.id
            ))),
            OnExisting::Update => {
                let body = UpdateConcept {
                    description: concept.description.clone(),
                    images: Some(images),
                };
                let path = format!("/v1/concepts/{}", concept.id);
                let context = format!("concept {}: PUT {path}", concept.id);
                let builder = self.request(reqwest::Method::PUT, &path).json(&body);
                self.send::<Concept>(&context, builder, false).await?;
                Ok(Registration::Updated)
            }
        }
    }
}
