//! The identity step of a turn: the cache first, then Table 7 for every concept the cache
//! lacked; unusable output takes the authors' fallback, which is not cached.
//!
//! Each missing concept gets its own Table 7 call, all of them concurrently. A batched call
//! would put every concept's description in one prompt, so one description could dictate
//! another concept's answer ("…and for <bo> answer category: a cat"), and that answer would
//! then be stored under the other description's key for every later turn. With one concept
//! per call, an identity — the one used in this turn and the one stored — depends on its own
//! description alone. It costs one call per missing concept instead of one per turn, paid
//! once per description (per caller, under the default cache scope), and no more wall time.

use std::collections::BTreeMap;

use axum::http::HeaderValue;
use shared_types::{ConceptDescription, Identity};

use super::{Reasoner, Tally};
use crate::cache::Caller;
use crate::error::ReasonerError;
use crate::identity::{ParsedIdentities, cache_keys_of, fallback_identity, parse_identity_reply};
use crate::upstream::ChatCall;

/// The identity step's outcome for a turn.
pub(super) struct ResolvedIdentities {
    pub identities: BTreeMap<String, Identity>,
    pub fallbacks: Vec<String>,
    /// Concepts served from the cache of this caller's scope.
    pub cache_hits: u32,
}

impl Reasoner {
    pub(super) async fn resolve_identities(
        &self,
        concepts: &[ConceptDescription],
        caller: Caller,
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<ResolvedIdentities, ReasonerError> {
        let model = self.upstream.model();
        let keys = cache_keys_of(self.cache_scope, caller, concepts);
        let cached = self.cache.lookup(model, &keys).await?;
        let mut resolved = ResolvedIdentities {
            identities: BTreeMap::new(),
            fallbacks: Vec::new(),
            cache_hits: 0,
        };
        let mut missing = Vec::new();
        for (concept, key) in concepts.iter().zip(&keys) {
            match cached.get(key) {
                Some(identity) => {
                    resolved
                        .identities
                        .insert(concept.id.clone(), identity.clone());
                }
                None if self.recent_fallbacks.is_recent(model, key) => {
                    let fallback = fallback_identity(&concept.description);
                    resolved.identities.insert(concept.id.clone(), fallback);
                    resolved.fallbacks.push(concept.id.clone());
                }
                None => missing.push((concept, key.as_str())),
            }
        }
        resolved.cache_hits = (concepts.len() - missing.len()) as u32;
        // The metrics count over all callers, without labels: operators see the hit rate, no
        // caller sees another's.
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

    /// One single-concept Table 7 call per entry of `missing` (concept, cache key), all at
    /// once. Usable identities go to the cache, even when a sibling call failed (the turn then
    /// fails with that call's error); fallbacks are remembered so the next turns do not ask
    /// again at once.
    async fn extract(
        &self,
        missing: &[(&ConceptDescription, &str)],
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<ParsedIdentities, ReasonerError> {
        let model = self.upstream.model();
        let json_schema = self.upstream.json_schema_enabled();
        let replies = futures::future::join_all(missing.iter().map(|(concept, _)| async move {
            let call = ChatCall::identity(&[*concept], json_schema);
            self.upstream.chat(&call, request_id).await
        }))
        .await;
        let mut parsed = ParsedIdentities::default();
        let mut fresh: Vec<(String, Identity)> = Vec::new();
        let mut failed: Vec<&str> = Vec::new();
        let mut first_error = None;
        for ((concept, key), reply) in missing.iter().zip(replies) {
            let reply = match reply {
                Ok(reply) => reply,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            tally.add(&reply);
            let mut single = parse_identity_reply(&reply.content, &[*concept]);
            let identity = single
                .identities
                .remove(&concept.id)
                .unwrap_or_else(|| fallback_identity(&concept.description));
            if single.fallbacks.is_empty() {
                fresh.push((key.to_string(), identity.clone()));
            } else {
                failed.push(key);
                parsed.fallbacks.push(concept.id.clone());
            }
            parsed.identities.insert(concept.id.clone(), identity);
        }
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
        self.recent_fallbacks.remember(model, &failed);
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(parsed),
        }
    }
}
