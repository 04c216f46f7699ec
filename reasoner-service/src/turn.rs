//! One dialogue turn on the cloud side (paper Figure 2, stages b and c): identities, test-time
//! reflection, answer generation, in the four modes of Table 5 and the text-only protocol of
//! appendix D.
//!
//! | mode            | image | upstream calls                                         |
//! | --------------- | ----- | ------------------------------------------------------ |
//! | `full`          | yes   | identity (cache misses) + verify + answer (Table 9)    |
//! | `no_reflection` | yes   | identity (cache misses) + answer with the raw cues     |
//! | `no_detector`   | yes   | identity (cache misses) + answer, report without cues  |
//! | `pure`          | any   | answer with the raw descriptions                       |
//! | other modes     | no    | identity (cache misses) + answer (appendix D)          |
//!
//! Verification is one call per concept reported present (the paper's way) or, with
//! `batched_verification`, one call for all of the turn's questions.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use axum::http::HeaderValue;
use futures::future::try_join_all;
use shared_types::{
    ConceptDescription, Cue, CueSet, IdentitiesRequest, IdentitiesResponse, Identity, Mode,
    ReasonRequest, ReasonResponse, ReasonTimings, ReflectionAction, UpstreamStats, Verification,
    VerifiedField,
};

use crate::cache::IdentityCache;
use crate::error::ReasonerError;
use crate::identity::{
    RecentFallbacks, fallback_identity, hashes_of, identity_call, parse_identity_reply,
};
use crate::image::{DataUri, image_data_uri};
use crate::metrics::Metrics;
use crate::prompts::{
    DetectionReportEntry, VERIFICATION_SYSTEM_PROMPT, answer_system_prompt,
    identity_structured_prompt, raw_description_prompt, verification_user_prompt,
};
use crate::reflection::{
    PlannedQuestion, absent_cue, parse_yes_no_answers, refine_cue, verification_response_format,
};
use crate::upstream::{CallKind, ChatCall, ChatReply, UpstreamClient};

/// Largest number of concepts in one request; the paper's multi-concept scenes have a few.
pub const MAX_CONCEPTS: usize = 64;

/// Tokens a verification reply may take per question: room for "Q1. Yes, ..." but not for an
/// essay (the first standalone yes/no is all that is read), so a rambling model cannot make a
/// check cost a whole answer's decoding.
pub const VERIFY_MAX_TOKENS_PER_QUESTION: u32 = 16;

pub struct Reasoner {
    pub upstream: UpstreamClient,
    pub cache: IdentityCache,
    pub metrics: Metrics,
    pub recent_fallbacks: RecentFallbacks,
}

/// Upstream usage accumulated over a turn.
#[derive(Default)]
struct Tally {
    calls: u32,
    retries: u32,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Tally {
    fn add(&mut self, reply: &ChatReply) {
        self.calls += 1;
        self.retries += reply.retries;
        self.prompt_tokens += reply.prompt_tokens;
        self.completion_tokens += reply.completion_tokens;
    }

    fn into_stats(self, model: &str, identity_cache_hits: u32) -> UpstreamStats {
        UpstreamStats {
            calls: self.calls,
            retries: self.retries,
            identity_cache_hits,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            model: model.to_owned(),
        }
    }
}

/// The identity step's outcome for a turn.
struct ResolvedIdentities {
    identities: BTreeMap<String, Identity>,
    fallbacks: Vec<String>,
    cache_hits: u32,
}

impl Reasoner {
    /// `POST /v1/identities`: the identity step alone.
    pub async fn identities(
        &self,
        request: IdentitiesRequest,
        request_id: Option<&HeaderValue>,
    ) -> Result<IdentitiesResponse, ReasonerError> {
        validate_concepts(&request.concepts)?;
        let mut tally = Tally::default();
        let resolved = self
            .resolve_identities(&request.concepts, request_id, &mut tally)
            .await?;
        Ok(IdentitiesResponse {
            identities: resolved.identities,
            fallbacks: resolved.fallbacks,
            upstream: tally.into_stats(self.upstream.model(), resolved.cache_hits),
        })
    }

    /// `POST /v1/reason`: one turn. `request_id` is forwarded on every upstream call.
    pub async fn reason(
        &self,
        mut request: ReasonRequest,
        request_id: Option<&HeaderValue>,
    ) -> Result<ReasonResponse, ReasonerError> {
        let started = Instant::now();
        validate_reason_request(&request)?;
        // The request's image becomes the data URI's payload without a copy: under load,
        // memory per turn is dominated by the image.
        let image = request.image.take().map(image_data_uri).transpose()?;
        let mut tally = Tally::default();
        let mut timings = ReasonTimings::default();
        let mut response = ReasonResponse {
            answer: String::new(),
            mode: request.mode,
            refined_cues: None,
            identities: BTreeMap::new(),
            verifications: Vec::new(),
            actions: BTreeMap::new(),
            upstream: UpstreamStats::default(),
            timings: ReasonTimings::default(),
        };
        let mut cache_hits = 0;

        let answer_call = if request.mode == Mode::Pure {
            ChatCall {
                kind: CallKind::Answer,
                system: None,
                user_text: raw_description_prompt(&request.concepts, &request.question),
                image: image.clone(),
                max_tokens: request.options.max_answer_tokens,
                temperature: None,
                response_format: None,
            }
        } else {
            let identity_started = Instant::now();
            let resolved = self
                .resolve_identities(&request.concepts, request_id, &mut tally)
                .await?;
            timings.identity_ms = elapsed_ms(identity_started);
            cache_hits = resolved.cache_hits;
            response.identities = resolved.identities;

            match (&image, request.mode) {
                // Appendix D: no image, so no cues to verify; identities plus the question.
                (None, _) => ChatCall {
                    kind: CallKind::Answer,
                    system: None,
                    user_text: identity_structured_prompt(&response.identities, &request.question),
                    image: None,
                    max_tokens: request.options.max_answer_tokens,
                    temperature: None,
                    response_format: None,
                },
                (Some(image), Mode::NoDetector) => {
                    let report = response
                        .identities
                        .iter()
                        .map(|(id, identity)| {
                            (id.clone(), DetectionReportEntry::identity_only(identity))
                        })
                        .collect();
                    self.answer_call(&report, &request, image)
                }
                (Some(image), mode) => {
                    let cues = request.cues.clone().unwrap_or_default();
                    let refined = if mode == Mode::Full {
                        let verification_started = Instant::now();
                        let (refined, verifications, actions) = self
                            .reflect(
                                &cues,
                                &response.identities,
                                image,
                                request.options.batched_verification,
                                request_id,
                                &mut tally,
                            )
                            .await?;
                        timings.verification_ms = elapsed_ms(verification_started);
                        response.verifications = verifications;
                        response.actions = actions;
                        refined
                    } else {
                        response.actions = cues
                            .iter()
                            .map(|(id, cue)| {
                                let action = if cue.present {
                                    ReflectionAction::Unverified
                                } else {
                                    ReflectionAction::NotPresent
                                };
                                (id.clone(), action)
                            })
                            .collect();
                        cues
                    };
                    let report = detection_report(&response.identities, &refined);
                    response.refined_cues = Some(refined);
                    self.answer_call(&report, &request, image)
                }
            }
        };

        let answer_started = Instant::now();
        let reply = self.upstream.chat(&answer_call, request_id).await?;
        timings.answer_ms = elapsed_ms(answer_started);
        tally.add(&reply);
        response.answer = reply.content.trim().to_owned();
        timings.total_ms = elapsed_ms(started);
        response.timings = timings;
        response.upstream = tally.into_stats(self.upstream.model(), cache_hits);
        Ok(response)
    }

    fn answer_call(
        &self,
        report: &BTreeMap<String, DetectionReportEntry>,
        request: &ReasonRequest,
        image: &DataUri,
    ) -> ChatCall {
        ChatCall {
            kind: CallKind::Answer,
            system: Some(answer_system_prompt(report)),
            user_text: request.question.clone(),
            image: Some(image.clone()),
            max_tokens: request.options.max_answer_tokens,
            temperature: None,
            response_format: None,
        }
    }

    /// Cache first, then one Table 7 call for every concept the cache lacked.
    async fn resolve_identities(
        &self,
        concepts: &[ConceptDescription],
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<ResolvedIdentities, ReasonerError> {
        let model = self.upstream.model();
        let hashes = hashes_of(concepts);
        let cached = self.cache.lookup(model, &hashes).await?;
        let mut identities = BTreeMap::new();
        let mut missing = Vec::new();
        let mut missing_hashes = Vec::new();
        let mut fallbacks = Vec::new();
        for (concept, hash) in concepts.iter().zip(&hashes) {
            match cached.get(hash) {
                Some(identity) => {
                    identities.insert(concept.id.clone(), identity.clone());
                }
                None if self.recent_fallbacks.is_recent(model, hash) => {
                    identities.insert(concept.id.clone(), fallback_identity(&concept.description));
                    fallbacks.push(concept.id.clone());
                }
                None => {
                    missing.push(concept);
                    missing_hashes.push(hash.clone());
                }
            }
        }
        let cache_hits = (concepts.len() - missing.len()) as u32;
        self.metrics.identity_cache_hits.inc_by(cache_hits as u64);
        self.metrics
            .identity_cache_misses
            .inc_by(missing.len() as u64);
        if !missing.is_empty() {
            let call = identity_call(&missing, self.upstream.json_schema_enabled());
            let reply = self.upstream.chat(&call, request_id).await?;
            tally.add(&reply);
            let parsed = parse_identity_reply(&reply.content, &missing);
            let fresh: Vec<(String, Identity)> = missing
                .iter()
                .zip(&missing_hashes)
                .filter(|(concept, _)| !parsed.fallbacks.contains(&concept.id))
                .map(|(concept, hash)| (hash.clone(), parsed.identities[&concept.id].clone()))
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
            let failed: Vec<&str> = missing
                .iter()
                .zip(&missing_hashes)
                .filter(|(concept, _)| parsed.fallbacks.contains(&concept.id))
                .map(|(_, hash)| hash.as_str())
                .collect();
            self.recent_fallbacks.remember(model, &failed);
            identities.extend(parsed.identities);
            fallbacks.extend(parsed.fallbacks);
        }
        Ok(ResolvedIdentities {
            identities,
            fallbacks,
            cache_hits,
        })
    }

    /// Table 8 questions for every concept reported present, then the refinement rule.
    async fn reflect(
        &self,
        cues: &CueSet,
        identities: &BTreeMap<String, Identity>,
        image: &DataUri,
        batched: bool,
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<
        (
            CueSet,
            Vec<Verification>,
            BTreeMap<String, ReflectionAction>,
        ),
        ReasonerError,
    > {
        let per_concept: Vec<Vec<PlannedQuestion>> = cues
            .iter()
            .map(|(id, cue)| crate::reflection::plan_questions(id, &identities[id], cue))
            .filter(|questions| !questions.is_empty())
            .collect();
        // Each group is one upstream call: per concept, or everything at once.
        let groups: Vec<Vec<PlannedQuestion>> = if batched {
            let all: Vec<PlannedQuestion> = per_concept.into_iter().flatten().collect();
            if all.is_empty() {
                Vec::new()
            } else {
                vec![all]
            }
        } else {
            per_concept
        };
        let json_schema = self.upstream.verify_json_schema_enabled();
        let calls = groups.iter().map(|questions| {
            let texts: Vec<String> = questions
                .iter()
                .enumerate()
                .map(|(index, question)| question.text(index + 1))
                .collect();
            let call = ChatCall {
                kind: CallKind::Verify,
                system: Some(VERIFICATION_SYSTEM_PROMPT.to_owned()),
                user_text: verification_user_prompt(&texts),
                image: Some(image.clone()),
                max_tokens: Some(VERIFY_MAX_TOKENS_PER_QUESTION * texts.len() as u32),
                temperature: Some(0.0),
                response_format: json_schema.then(|| verification_response_format(texts.len())),
            };
            async move {
                let reply = self.upstream.chat(&call, request_id).await?;
                Ok::<_, ReasonerError>((texts, reply))
            }
        });
        // The calls of one turn run concurrently; nothing serializes them across turns.
        let replies = try_join_all(calls).await?;

        let mut verifications = Vec::new();
        for (questions, (texts, reply)) in groups.iter().zip(replies) {
            tally.add(&reply);
            let answers = parse_yes_no_answers(&reply.content, questions.len());
            for ((question, text), answer) in questions.iter().zip(texts).zip(answers) {
                verifications.push(Verification {
                    concept: question.concept.clone(),
                    about: question.about,
                    question: text,
                    raw_answer: reply.content.clone(),
                    answer,
                });
            }
        }

        let mut refined = CueSet::new();
        let mut actions = BTreeMap::new();
        for (id, cue) in cues {
            let answer_about = |field: VerifiedField| {
                verifications
                    .iter()
                    .find(|verification| &verification.concept == id && verification.about == field)
                    .map(|verification| verification.answer)
            };
            let (cue, action) = refine_cue(
                cue,
                answer_about(VerifiedField::LocationAbsolute),
                answer_about(VerifiedField::LocationRelative),
            );
            if action != ReflectionAction::NotPresent {
                self.metrics
                    .reflection_outcomes
                    .with_label_values(&[action_label(action)])
                    .inc();
            }
            refined.insert(id.clone(), cue);
            actions.insert(id.clone(), action);
        }
        Ok((refined, verifications, actions))
    }
}

/// Table 9's report: every concept of the turn; one the edge did not report counts as absent.
fn detection_report(
    identities: &BTreeMap<String, Identity>,
    cues: &CueSet,
) -> BTreeMap<String, DetectionReportEntry> {
    let absent = absent_cue();
    identities
        .iter()
        .map(|(id, identity)| {
            let cue: &Cue = cues.get(id).unwrap_or(&absent);
            (id.clone(), DetectionReportEntry::from_cue(identity, cue))
        })
        .collect()
}

fn action_label(action: ReflectionAction) -> &'static str {
    match action {
        ReflectionAction::Kept => "kept",
        ReflectionAction::DroppedLocationAbsolute => "dropped_location_absolute",
        ReflectionAction::DroppedLocationRelative => "dropped_location_relative",
        ReflectionAction::Suppressed => "suppressed",
        ReflectionAction::NotPresent => "not_present",
        ReflectionAction::Unverified => "unverified",
    }
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Ids are bracketed (`<bo>`), unique and described; there is at least one and not too many.
fn validate_concepts(concepts: &[ConceptDescription]) -> Result<(), ReasonerError> {
    if concepts.len() > MAX_CONCEPTS {
        return Err(ReasonerError::invalid(
            "too_many_concepts",
            format!("at most {MAX_CONCEPTS} concepts per request"),
        ));
    }
    let mut seen = HashSet::new();
    for concept in concepts {
        let inner = concept
            .id
            .strip_prefix('<')
            .and_then(|rest| rest.strip_suffix('>'));
        let well_formed = inner.is_some_and(|inner| {
            !inner.is_empty() && !inner.contains(['<', '>']) && !inner.contains(char::is_whitespace)
        });
        if !well_formed {
            return Err(ReasonerError::invalid(
                "invalid_concept_id",
                format!(
                    "concept ids are bracketed, e.g. \"<bo>\"; got {:?}",
                    concept.id
                ),
            ));
        }
        if !seen.insert(concept.id.as_str()) {
            return Err(ReasonerError::invalid(
                "duplicate_concept",
                format!("concept {} appears twice", concept.id),
            ));
        }
        if concept.description.trim().is_empty() {
            return Err(ReasonerError::invalid(
                "empty_description",
                format!("concept {} has an empty description", concept.id),
            ));
        }
    }
    Ok(())
}

fn validate_reason_request(request: &ReasonRequest) -> Result<(), ReasonerError> {
    if request.question.trim().is_empty() {
        return Err(ReasonerError::invalid(
            "empty_question",
            "the question is empty",
        ));
    }
    validate_concepts(&request.concepts)?;
    if let Some(cues) = &request.cues {
        let known: HashSet<&str> = request.concepts.iter().map(|c| c.id.as_str()).collect();
        let unknown: Vec<&str> = cues
            .keys()
            .map(String::as_str)
            .filter(|id| !known.contains(id))
            .collect();
        if !unknown.is_empty() {
            return Err(ReasonerError::invalid(
                "unknown_concept",
                format!(
                    "cues for concepts not in the request: {}",
                    unknown.join(", ")
                ),
            ));
        }
    }
    let needs_cues = matches!(request.mode, Mode::Full | Mode::NoReflection);
    match (&request.image, &request.cues) {
        (None, Some(_)) if request.mode != Mode::Pure && request.mode != Mode::NoDetector => {
            Err(ReasonerError::invalid(
                "cues_without_image",
                "cues describe an image, but the request has none",
            ))
        }
        (Some(_), None) if needs_cues => Err(ReasonerError::invalid(
            "missing_cues",
            "modes full and no_reflection need the edge's cues with the image",
        )),
        _ => Ok(()),
    }
}
