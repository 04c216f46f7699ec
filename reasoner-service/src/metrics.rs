//! Prometheus metrics, one registry per server (not the process-global one) so that tests can
//! run several servers in one process and read each one's counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Logical upstream calls by `kind` (identity, verify, answer) and `outcome`.
    pub upstream_calls: IntCounterVec,
    /// Wall time of a logical upstream call, retries and backoff included, by `kind`.
    pub upstream_latency: HistogramVec,
    /// Retries after a 429, a 5xx, a timeout or a transport error, by `kind`.
    pub upstream_retries: IntCounterVec,
    pub identity_cache_hits: IntCounter,
    pub identity_cache_misses: IntCounter,
    /// Concepts whose identity fell back to the authors' default after unusable output.
    pub identity_fallbacks: IntCounter,
    /// What reflection did per verified concept: kept, location dropped, suppressed.
    pub reflection_outcomes: IntCounterVec,
    /// Turns by endpoint and HTTP status.
    pub turns: IntCounterVec,
    pub turn_latency: HistogramVec,
    /// Streamed turns: from the turn's start to the first answer text handed to the client.
    pub answer_first_token: prometheus::Histogram,
    /// Turns refused because the concurrency limit was reached.
    pub turns_rejected: IntCounter,
    pub turns_in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("slc_reasoner".into()), None).expect("a valid metric prefix");
        let latency_buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let upstream_calls = IntCounterVec::new(
            Opts::new("upstream_calls_total", "Logical calls to the large model"),
            &["kind", "outcome"],
        )
        .unwrap();
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "upstream_call_duration_seconds",
                "Wall time of a logical upstream call including retries",
            )
            .buckets(latency_buckets.clone()),
            &["kind"],
        )
        .unwrap();
        let upstream_retries = IntCounterVec::new(
            Opts::new("upstream_retries_total", "Retried upstream attempts"),
            &["kind"],
        )
        .unwrap();
        let identity_cache_hits = IntCounter::new(
            "identity_cache_hits_total",
            "Concept identities read from the cache",
        )
        .unwrap();
        let identity_cache_misses = IntCounter::new(
            "identity_cache_misses_total",
            "Concept identities that had to be extracted",
        )
        .unwrap();
        let identity_fallbacks = IntCounter::new(
            "identity_fallbacks_total",
            "Concept identities that used the authors' fallback",
        )
        .unwrap();
        let reflection_outcomes = IntCounterVec::new(
            Opts::new(
                "reflection_outcomes_total",
                "Refinement-rule outcomes per verified concept",
            ),
            &["action"],
        )
        .unwrap();
        let turns = IntCounterVec::new(
            Opts::new("turns_total", "Requests to the turn endpoints"),
            &["endpoint", "status"],
        )
        .unwrap();
        let turn_latency = HistogramVec::new(
            HistogramOpts::new("turn_duration_seconds", "Wall time of a turn").buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["endpoint"],
        )
        .unwrap();
        let answer_first_token = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "answer_first_token_seconds",
                "Streamed turns: time from the turn's start to the first answer text",
            )
            .buckets(latency_buckets.clone()),
        )
        .unwrap();
        let turns_rejected = IntCounter::new(
            "turns_rejected_total",
            "Turns refused with 429 over the concurrency limit",
        )
        .unwrap();
        let turns_in_flight = IntGauge::new("turns_in_flight", "Turns being served").unwrap();

        for collector in [
            Box::new(upstream_calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(identity_cache_hits.clone()),
            Box::new(identity_cache_misses.clone()),
            Box::new(identity_fallbacks.clone()),
            Box::new(reflection_outcomes.clone()),
            Box::new(turns.clone()),
            Box::new(turn_latency.clone()),
            Box::new(answer_first_token.clone()),
            Box::new(turns_rejected.clone()),
            Box::new(turns_in_flight.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Self {
            registry,
            upstream_calls,
            upstream_latency,
            upstream_retries,
            identity_cache_hits,
            identity_cache_misses,
            identity_fallbacks,
            reflection_outcomes,
            turns,
            turn_latency,
            answer_first_token,
            turns_rejected,
            turns_in_flight,
        }
    }

    /// The text exposition format that `/metrics` serves.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
