//! The identity step of a turn: the cache first, then one Table 7 call for every concept the
//! cache lacked; unusable output takes the authors' fallback, which is not cached.

use std::collections::BTreeMap;

use axum::http::HeaderValue;
use shared_types::{ConceptDescription, Identity};

use super::{Reasoner, Tally};
use crate::error::ReasonerError;
use crate::identity::{ParsedIdentities, fallback_identity, hashes_of, parse_identity_reply};
use crate::upstream::ChatCall;

/// The identity step's outcome for a turn.
pub(super) struct ResolvedIdentities {
    pub identities: BTreeMap<String, Identity>,
    pub fallbacks: Vec<String>,
    pub cache_hits: u32,
}

impl Reasoner {
    pub(super) async fn resolve_identities(
        &self,
        concepts: &[ConceptDescription],
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<ResolvedIdentities, ReasonerError> {
        let model = self.upstream.model();
        let hashes = hashes_of(concepts);
        let cached = self.cache.lookup(model, &hashes).await?;
        let mut resolved = ResolvedIdentities {
            identities: BTreeMap::new(),
            fallbacks: Vec::new(),
            cache_hits: 0,
        };
        let mut missing = Vec::new();
        for (concept, hash) in concepts.iter().zip(&hashes) {
            match cached.get(hash) {
                Some(identity) => {
                    resolved
                        .identities
                        .insert(concept.id.clone(), identity.clone());
                }
                None if self.recent_fallbacks.is_recent(model, hash) => {
                    let fallback = fallback_identity(&concept.description);
                    resolved.identities.insert(concept.id.clone(), fallback);
                    resolved.fallbacks.push(concept.id.clone());
                }
                None => missing.push((concept, hash.as_str())),
            }
        }
        resolved.cache_hits = (concepts.len() - missing.len()) as u32;
        self.metrics
            .identity_cache_hits
            .inc_by(resolved.cache_hits as u64);
        self.metrics
            .identity_cache_misses
            .inc_by(missing.len() as u64);
        if !missing.is_empty() {
            let parsed = self.extract(&missing, request_id, tally).await?;
            resolved.identities.extend(parsed.identities);
            resolved.fallbacks.extend(parsed.fallbacks);
        }
        Ok(resolved)
    }

    /// One Table 7 call for `missing` (concept, description hash); usable identities go to
    /// the cache, fallbacks are remembered so the next turns do not ask again at once.
    async fn extract(
        &self,
        missing: &[(&ConceptDescription, &str)],
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<ParsedIdentities, ReasonerError> {
        let model = self.upstream.model();
        let concepts: Vec<&ConceptDescription> =
            missing.iter().map(|(concept, _)| *concept).collect();
        let call = ChatCall::identity(&concepts, self.upstream.json_schema_enabled());
        let reply = self.upstream.chat(&call, request_id).await?;
        tally.add(&reply);
        let parsed = parse_identity_reply(&reply.content, &concepts);
        let (failed, fresh): (Vec<_>, Vec<_>) = missing
            .iter()
            .partition(|(concept, _)| parsed.fallbacks.contains(&concept.id));
        let fresh: Vec<(String, Identity)> = fresh
            .iter()
            .map(|(concept, hash)| (hash.to_string(), parsed.identities[&concept.id].clone()))
            .collect();
        self.cache.store(model, &fresh).await?;
        self.metrics
            .identity_fallbacks
            .inc_by(parsed.fallbacks.len() as u64);
        if !parsed.fallbacks.is_empty() {
            tracing::warn!(
                fallbacks = ?parsed.fallbacks,
                "identity output unusable for some concepts; using the authors' fallback"
            );
        }
        let failed: Vec<&str> = failed.iter().map(|(_, hash)| *hash).collect();
        self.recent_fallbacks.remember(model, &failed);
        Ok(parsed)
    }
}
