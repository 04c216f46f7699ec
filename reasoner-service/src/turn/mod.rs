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
//! Identity is one call per concept the cache lacks, made concurrently (`identities.rs` says
//! why not one batched call).
//!
//! Verification is one call per concept reported present (the paper's way) or, with
//! `batched_verification`, one call for all of the turn's questions. With `recheck_mentioned`
//! (beyond the paper), a concept the question names but the edge reported absent gets one
//! presence question, in the batch when batching is on; "yes" recovers it without a location.

mod calls;
mod identities;
mod reflect;

use std::collections::BTreeMap;
use std::time::Instant;

use axum::http::HeaderValue;
use shared_types::{
    IdentitiesRequest, IdentitiesResponse, ReasonRequest, ReasonResponse, ReasonTimings,
    UpstreamStats,
};
use tokio::sync::mpsc;

pub use calls::VERIFY_MAX_TOKENS_PER_QUESTION;

use crate::cache::{Caller, IdentityCache, IdentityCacheScope};
use crate::error::ReasonerError;
use crate::identity::RecentFallbacks;
use crate::image::DataUri;
use crate::metrics::Metrics;
use crate::prompts::DetectionReportEntry;
use crate::upstream::{ChatCall, ChatReply, UpstreamClient};
use crate::validation::{TurnPlan, ValidReasonRequest, validate_identities, validate_reason};
use reflect::{ReflectPlan, detection_report, mentioned_misses, unverified_actions};

/// What a streamed turn hands on before its response: the refined cues once reflection is
/// done, then the answer's text piece by piece.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    Verification(shared_types::CueSet),
    Delta(String),
}

pub struct Reasoner {
    pub upstream: UpstreamClient,
    pub cache: IdentityCache,
    /// Whose turns share cached identities.
    pub cache_scope: IdentityCacheScope,
    pub metrics: Metrics,
    pub recent_fallbacks: RecentFallbacks,
    /// Characters of earlier turns the answer call may get (`--history-budget-chars`).
    pub history_budget_chars: usize,
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

/// A turn in progress: the response as it fills, with its usage and cache hits.
struct Turn<'a> {
    request: &'a ValidReasonRequest,
    caller: Caller,
    request_id: Option<&'a HeaderValue>,
    tally: Tally,
    cache_hits: u32,
    response: ReasonResponse,
}

impl Reasoner {
    /// `POST /v1/identities`: the identity step alone. `caller` picks the cache scope's
    /// partition (see `cache.rs`).
    pub async fn identities(
        &self,
        request: IdentitiesRequest,
        caller: Caller,
        request_id: Option<&HeaderValue>,
    ) -> Result<IdentitiesResponse, ReasonerError> {
        let concepts = validate_identities(request)?;
        let mut tally = Tally::default();
        let resolved = self
            .resolve_identities(&concepts, caller, request_id, &mut tally)
            .await?;
        Ok(IdentitiesResponse {
            identities: resolved.identities,
            fallbacks: resolved.fallbacks,
            upstream: tally.into_stats(self.upstream.model(), resolved.cache_hits),
        })
    }

    /// `POST /v1/reason`: one turn, per mode (see the table above), then the answer call.
    /// `request_id` is forwarded on every upstream call; `caller` picks the identity cache's
    /// partition.
    pub async fn reason(
        &self,
        request: ReasonRequest,
        caller: Caller,
        request_id: Option<&HeaderValue>,
    ) -> Result<ReasonResponse, ReasonerError> {
        let request = validate_reason(request)?;
        self.run(&request, caller, request_id, None).await
    }

    /// A validated turn. With `events` (a streamed turn) the refined cues and the answer's
    /// pieces go there as they are known, and the answer call is streamed.
    pub async fn run(
        &self,
        request: &ValidReasonRequest,
        caller: Caller,
        request_id: Option<&HeaderValue>,
        events: Option<&mpsc::Sender<TurnEvent>>,
    ) -> Result<ReasonResponse, ReasonerError> {
        let started = Instant::now();
        let (history, history_trace) =
            crate::history::fit_history(request.history.clone(), self.history_budget_chars);
        let mut turn = Turn::new(request, caller, request_id);
        turn.response.history = history_trace;
        let mut answer_call = match &request.plan {
            TurnPlan::Pure { image } => ChatCall::raw_answer(
                &request.concepts,
                &request.question,
                image.as_ref(),
                request.options.max_answer_tokens,
            ),
            TurnPlan::TextOnly => self.text_only(&mut turn).await?,
            TurnPlan::NoDetector { image } => self.no_detector(&mut turn, image).await?,
            TurnPlan::NoReflection { image, cues } => {
                self.identify(&mut turn).await?;
                turn.response.actions = unverified_actions(cues);
                turn.answer_with_cues(cues.clone(), image)
            }
            TurnPlan::Full { image, cues } => self.full(&mut turn, image, cues).await?,
        };
        // Only the answer sees the conversation so far, as prior messages, text only.
        answer_call.history = history;
        let answer_started = Instant::now();
        let reply = match events {
            None => self.upstream.chat(&answer_call, request_id).await?,
            Some(events) => {
                self.stream_answer(&mut turn, &answer_call, started, events)
                    .await?
            }
        };
        turn.response.timings.answer_ms = elapsed_ms(answer_started);
        turn.tally.add(&reply);
        turn.response.answer = reply.content.trim().to_owned();
        turn.response.timings.total_ms = elapsed_ms(started);
        Ok(turn.finish(self.upstream.model()))
    }

    /// The answer call streamed: the refined cues first (when the mode has them), then each
    /// piece of text as it arrives; the first one's time is the turn's time to first token.
    async fn stream_answer(
        &self,
        turn: &mut Turn<'_>,
        answer_call: &ChatCall,
        started: Instant,
        events: &mpsc::Sender<TurnEvent>,
    ) -> Result<ChatReply, ReasonerError> {
        if let Some(cues) = &turn.response.refined_cues {
            let _ = events.send(TurnEvent::Verification(cues.clone())).await;
        }
        let mut first_token_ms = None;
        let on_delta = |text: String| {
            if first_token_ms.is_none() {
                let elapsed = started.elapsed();
                self.metrics
                    .answer_first_token
                    .observe(elapsed.as_secs_f64());
                first_token_ms = Some(elapsed.as_secs_f64() * 1e3);
            }
            let events = events.clone();
            async move {
                let _ = events.send(TurnEvent::Delta(text)).await;
            }
        };
        let reply = self
            .upstream
            .chat_stream(answer_call, turn.request_id, on_delta)
            .await?;
        turn.response.timings.first_token_ms = first_token_ms;
        Ok(reply)
    }

    /// The identity step of a turn, timed.
    async fn identify(&self, turn: &mut Turn<'_>) -> Result<(), ReasonerError> {
        let started = Instant::now();
        let resolved = self
            .resolve_identities(
                &turn.request.concepts,
                turn.caller,
                turn.request_id,
                &mut turn.tally,
            )
            .await?;
        turn.response.timings.identity_ms = elapsed_ms(started);
        turn.cache_hits = resolved.cache_hits;
        turn.response.identities = resolved.identities;
        Ok(())
    }

    /// Appendix D: no image, so no cues to verify; identities plus the question.
    async fn text_only(&self, turn: &mut Turn<'_>) -> Result<ChatCall, ReasonerError> {
        self.identify(turn).await?;
        Ok(ChatCall::text_answer(
            &turn.response.identities,
            &turn.request.question,
            turn.request.options.max_answer_tokens,
        ))
    }

    /// Mode `no_detector`: the report has identities only.
    async fn no_detector(
        &self,
        turn: &mut Turn<'_>,
        image: &DataUri,
    ) -> Result<ChatCall, ReasonerError> {
        self.identify(turn).await?;
        let report = turn
            .response
            .identities
            .iter()
            .map(|(id, identity)| (id.clone(), DetectionReportEntry::identity_only(identity)))
            .collect();
        Ok(turn.answer_with_report(&report, image))
    }

    /// Mode `full`: the cues are verified against the image before the answer.
    async fn full(
        &self,
        turn: &mut Turn<'_>,
        image: &DataUri,
        cues: &shared_types::CueSet,
    ) -> Result<ChatCall, ReasonerError> {
        self.identify(turn).await?;
        let started = Instant::now();
        let options = &turn.request.options;
        let recheck = if options.recheck_mentioned {
            mentioned_misses(cues, &turn.request.question)
        } else {
            Default::default()
        };
        let plan = ReflectPlan {
            batched: options.batched_verification,
            recheck: &recheck,
        };
        let reflection = self
            .reflect(
                cues,
                &turn.response.identities,
                image,
                plan,
                turn.request_id,
                &mut turn.tally,
            )
            .await?;
        turn.response.timings.verification_ms = elapsed_ms(started);
        turn.response.verifications = reflection.verifications;
        turn.response.actions = reflection.actions;
        Ok(turn.answer_with_cues(reflection.refined, image))
    }
}

impl<'a> Turn<'a> {
    fn new(
        request: &'a ValidReasonRequest,
        caller: Caller,
        request_id: Option<&'a HeaderValue>,
    ) -> Self {
        Self {
            request,
            caller,
            request_id,
            tally: Tally::default(),
            cache_hits: 0,
            response: ReasonResponse {
                answer: String::new(),
                mode: request.mode,
                refined_cues: None,
                identities: BTreeMap::new(),
                verifications: Vec::new(),
                actions: BTreeMap::new(),
                upstream: UpstreamStats::default(),
                timings: ReasonTimings::default(),
                history: None,
            },
        }
    }

    /// Table 9 with the cues the answer is grounded on, which the response reports.
    fn answer_with_cues(&mut self, cues: shared_types::CueSet, image: &DataUri) -> ChatCall {
        let report = detection_report(&self.response.identities, &cues);
        self.response.refined_cues = Some(cues);
        self.answer_with_report(&report, image)
    }

    fn answer_with_report(
        &self,
        report: &BTreeMap<String, DetectionReportEntry>,
        image: &DataUri,
    ) -> ChatCall {
        ChatCall::report_answer(
            report,
            &self.request.question,
            image,
            self.request.options.max_answer_tokens,
        )
    }

    fn finish(mut self, model: &str) -> ReasonResponse {
        self.response.upstream = self.tally.into_stats(model, self.cache_hits);
        self.response
    }
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
