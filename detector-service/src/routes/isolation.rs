//! Per-concept isolation (`SLC_CONCEPT_ISOLATION=per-concept`): each concept of a turn is
//! detected in its own Table 6 prompt, with the Eq. 1 adapter of its own embedding, so that
//! no description or photo of one concept can change how another is detected. (Verification
//! is per concept then too: `ask` refuses `batched_verification`.)
//!
//! The paper's way (`joint`, the default) lists every concept in one prompt and averages
//! their embeddings into one adapter choice: there, a description is context for the others.
//! The price of isolation is one generation per concept. They run one after another, so one
//! request holds one queue slot at a time, and the image's vision encoding and the prompt
//! prefix up to the concept line come from the engine's caches after the first.

use std::collections::BTreeMap;
use std::time::Instant;

use shared_types::{CueSet, DetectResponse, Timings, Usage};

use super::detect::detect_together;
use crate::error::ApiError;
use crate::images::DecodedImage;
use crate::registry::ConceptRecord;
use crate::state::AppState;

/// One detection per concept within the request's one deadline, merged into one response.
pub(super) async fn detect_each(
    state: &AppState,
    image: &DecodedImage,
    records: &[ConceptRecord],
    deadline: Instant,
) -> Result<DetectResponse, ApiError> {
    let started = Instant::now();
    let mut merged = Merged::default();
    for record in records {
        let single =
            detect_together(state, image, std::slice::from_ref(record), None, deadline).await?;
        merged.add(record.id.bracketed(), single);
    }
    Ok(merged.finish(started))
}

#[derive(Default)]
struct Merged {
    cues: CueSet,
    adapters: BTreeMap<String, shared_types::AdapterChoice>,
    usage: Usage,
    timings: Timings,
}

impl Merged {
    fn add(&mut self, id: String, single: DetectResponse) {
        self.cues.extend(single.cues);
        if let Some(adapter) = single.adapter {
            self.adapters.insert(id, adapter);
        }
        self.usage.prompt_tokens += single.usage.prompt_tokens;
        self.usage.completion_tokens += single.usage.completion_tokens;
        self.usage.decode_steps += single.usage.decode_steps;
        self.timings.vision_ms += single.timings.vision_ms;
        self.timings.prefill_ms += single.timings.prefill_ms;
        self.timings.decode_ms += single.timings.decode_ms;
    }

    fn finish(self, started: Instant) -> DetectResponse {
        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
        let model_ms = self.timings.vision_ms + self.timings.prefill_ms + self.timings.decode_ms;
        DetectResponse {
            cues: self.cues,
            adapter: None,
            concept_adapters: Some(self.adapters),
            usage: self.usage,
            timings: Timings {
                queue_ms: (total_ms - model_ms).max(0.0),
                total_ms,
                ..self.timings
            },
        }
    }
}
