//! Steerable doubles of the two models, for what the real engine cannot be made to do on
//! demand: block until released (a full queue, a passed deadline, a client that leaves), emit
//! an invalid cue set, fail to load, or report a chosen concept present so the reasoner path
//! can be driven. Everything else runs on the real engine (`real_engine.rs`). They behave like
//! the real thing where the HTTP layer can tell: the VLM answers a cue-set schema with a
//! document valid under it, streams its text piece by piece and honours stop strings and
//! `max_new_tokens`; the embedder's output depends on the image's pixels. Every request is
//! recorded so tests can assert what reached the model.

use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;
use slc_detector::model::{
    ConceptEmbedder, ContentPart, EdgeModels, FinishReason, GenerationOutput, GenerationRequest,
    GenerationTimings, GenerationUsage, ModelError, ModelLoader, PromptImage, ResizeRule, Role,
    TokenControl, VisionLanguageModel,
};

pub const BASE_MODEL: &str = "Qwen2.5-VL-3B-Instruct";

/// What the double saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub roles: Vec<Role>,
    pub system_text: String,
    pub user_text: String,
    pub image_hashes: Vec<String>,
    pub json_schema: Option<Value>,
    pub adapter: Option<String>,
    pub max_new_tokens: u32,
    pub temperature: f32,
    pub stop: Vec<String>,
}

/// Shared handle a test keeps to inspect and steer the doubles.
#[derive(Clone, Default)]
pub struct DoubleControl {
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    pub embedded_images: Arc<Mutex<usize>>,
    /// While `true`, generation blocks (to fill the queue or outlive a deadline).
    pub gate_closed: Arc<(Mutex<bool>, Condvar)>,
    /// The text a free-form (non-schema) request answers with.
    pub reply_text: Arc<Mutex<String>>,
    /// What a grounding request (a `bbox_2d` schema) answers; `{"bbox_2d": [10, 20, 30, 40]}`
    /// when empty.
    pub box_reply: Arc<Mutex<String>>,
    /// Which bracketed ids the detector double reports present.
    pub present_ids: Arc<Mutex<Vec<String>>>,
    /// Makes the cue-set output invalid, to exercise the invalid-output path.
    pub break_cue_output: Arc<Mutex<bool>>,
    pub fail_load: Arc<Mutex<Option<String>>>,
    pub adapters: Arc<Mutex<Vec<String>>>,
    /// The next this many generations panic, as tch does on a libtorch error.
    pub panics: Arc<Mutex<usize>>,
    /// How many times the models were loaded (a worker reloads after a panic).
    pub loads: Arc<Mutex<usize>>,
    /// Loads in progress now and the most ever at once; each load takes a few milliseconds
    /// so that workers loading together would overlap.
    pub loads_at_once: Arc<Mutex<(usize, usize)>>,
    /// The model has no resize rule (it cannot ground boxes), as of its next load.
    pub no_resize_rule: Arc<Mutex<bool>>,
}

impl DoubleControl {
    pub fn close_gate(&self) {
        *self.gate_closed.0.lock().unwrap() = true;
    }

    pub fn open_gate(&self) {
        *self.gate_closed.0.lock().unwrap() = false;
        self.gate_closed.1.notify_all();
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    fn wait_at_gate(&self) {
        let (lock, condvar) = &*self.gate_closed;
        let mut closed = lock.lock().unwrap();
        while *closed {
            closed = condvar.wait(closed).unwrap();
        }
    }
}

pub struct DoubleLoader(pub DoubleControl);

impl ModelLoader for DoubleLoader {
    fn load(&self, _worker: usize) -> Result<EdgeModels, ModelError> {
        if let Some(why) = self.0.fail_load.lock().unwrap().clone() {
            return Err(ModelError::Failed(why));
        }
        *self.0.loads.lock().unwrap() += 1;
        {
            let mut at_once = self.0.loads_at_once.lock().unwrap();
            at_once.0 += 1;
            at_once.1 = at_once.1.max(at_once.0);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        self.0.loads_at_once.lock().unwrap().0 -= 1;
        Ok(EdgeModels {
            vlm: Box::new(DoubleVlm(self.0.clone())),
            embedder: Box::new(PixelMeanEmbedder(self.0.clone())),
        })
    }
}

struct DoubleVlm(DoubleControl);

impl VisionLanguageModel for DoubleVlm {
    fn base_model_name(&self) -> String {
        BASE_MODEL.into()
    }

    fn adapter_names(&self) -> Vec<String> {
        self.0.adapters.lock().unwrap().clone()
    }

    fn warm_up(&mut self) -> Result<(), ModelError> {
        Ok(())
    }

    /// Qwen2.5-VL's defaults (`preprocessor_config.json` of the published checkpoints).
    fn resize_rule(&self) -> Option<ResizeRule> {
        if *self.0.no_resize_rule.lock().unwrap() {
            return None;
        }
        Some(ResizeRule {
            factor: 28,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
        })
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<GenerationOutput, ModelError> {
        let control = &self.0;
        if let Some(adapter) = &request.adapter
            && !control.adapters.lock().unwrap().contains(adapter)
        {
            return Err(ModelError::UnknownAdapter(adapter.clone()));
        }
        let text_of = |role: Role| -> String {
            request
                .messages
                .iter()
                .filter(|message| message.role == role)
                .map(|message| message.text())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let image_hashes = request
            .messages
            .iter()
            .flat_map(|message| message.content.iter())
            .filter_map(|part| match part {
                ContentPart::Image(image) => Some(image.sha256.clone()),
                ContentPart::Text(_) => None,
            })
            .collect();
        control.seen.lock().unwrap().push(SeenRequest {
            roles: request
                .messages
                .iter()
                .map(|message| message.role)
                .collect(),
            system_text: text_of(Role::System),
            user_text: text_of(Role::User),
            image_hashes,
            json_schema: request.json_schema.clone(),
            adapter: request.adapter.clone(),
            max_new_tokens: request.sampling.max_new_tokens,
            temperature: request.sampling.temperature,
            stop: request.sampling.stop.clone(),
        });
        control.wait_at_gate();
        {
            let mut panics = control.panics.lock().unwrap();
            if *panics > 0 {
                *panics -= 1;
                drop(panics);
                panic!("scripted: CUDA out of memory");
            }
        }

        let (full_text, forced_pieces) = match &request.json_schema {
            Some(schema) => self.schema_answer(schema),
            None => (control.reply_text.lock().unwrap().clone(), 0),
        };
        // Pieces of about four characters stand in for tokens.
        let pieces: Vec<String> = full_text
            .chars()
            .collect::<Vec<_>>()
            .chunks(4)
            .map(|chunk| chunk.iter().collect())
            .collect();
        let mut emitted = String::new();
        let mut finish = FinishReason::Stop;
        let mut count = 0u64;
        for piece in &pieces {
            if count == u64::from(request.sampling.max_new_tokens) {
                finish = FinishReason::Length;
                break;
            }
            let candidate = format!("{emitted}{piece}");
            if let Some(position) = request
                .sampling
                .stop
                .iter()
                .filter_map(|stop| candidate.find(stop.as_str()))
                .min()
            {
                let tail = &candidate[emitted.len()..position];
                if !tail.is_empty() {
                    on_text(tail);
                }
                emitted = candidate[..position].to_string();
                finish = FinishReason::StopSequence;
                count += 1;
                break;
            }
            count += 1;
            emitted = candidate;
            if on_text(piece) == TokenControl::Stop {
                finish = FinishReason::Cancelled;
                break;
            }
        }
        let prompt_chars: usize = request
            .messages
            .iter()
            .map(|message| message.text().len())
            .sum();
        Ok(GenerationOutput {
            text: emitted,
            token_ids: (0..count as u32).collect(),
            finish_reason: finish,
            usage: GenerationUsage {
                prompt_tokens: (prompt_chars / 4) as u64,
                completion_tokens: count,
                decode_steps: count.saturating_sub(forced_pieces),
                ..GenerationUsage::default()
            },
            timings: GenerationTimings {
                vision_ms: 1.0,
                prefill_ms: 1.0,
                decode_ms: count as f64,
                time_to_first_token_ms: 2.0,
            },
        })
    }
}

impl DoubleVlm {
    /// A document valid under the cue-set schema: the schema's required keys, in order, each
    /// present (with both locations) when listed in `present_ids`, else `{"present": false}`.
    /// Returns the text and how many of its pieces a grammar would have forced.
    fn schema_answer(&self, schema: &Value) -> (String, u64) {
        if schema["properties"].get("bbox_2d").is_some() {
            let reply = self.0.box_reply.lock().unwrap().clone();
            if reply.is_empty() {
                return (r#"{"bbox_2d": [10, 20, 30, 40]}"#.into(), 0);
            }
            return (reply, 0);
        }
        if *self.0.break_cue_output.lock().unwrap() {
            return ("{\"oops\": true}".into(), 0);
        }
        let present = self.0.present_ids.lock().unwrap().clone();
        let Some(required) = schema.get("required").and_then(Value::as_array) else {
            return ("{}".into(), 0);
        };
        let mut object = serde_json::Map::new();
        for id in required.iter().filter_map(Value::as_str) {
            let cue = if present.iter().any(|p| p == id) {
                serde_json::json!({
                    "present": true,
                    "location-absolute": "center",
                    "location-relative": "on the sofa"
                })
            } else {
                serde_json::json!({"present": false})
            };
            object.insert(id.to_string(), cue);
        }
        let text = Value::Object(object).to_string();
        // Keys and punctuation are forced by the schema; only the free strings and booleans
        // would need the model. Count the structural share as forced, as jump-forward would.
        let free_chars =
            present.len() * ("center".len() + "on the sofa".len() + 4) + required.len() * 5;
        let forced = text.len().saturating_sub(free_chars) / 4;
        (text, forced as u64)
    }
}

/// A stand-in for CLIP whose embedding is the image's mean red, green and blue, so that
/// reference images of different colours get different embeddings and the adapter choice is
/// driven by the pixels as it is with CLIP.
struct PixelMeanEmbedder(DoubleControl);

impl ConceptEmbedder for PixelMeanEmbedder {
    fn clip_model_name(&self) -> String {
        "pixel-mean-test-double".into()
    }

    fn embed_images(&mut self, images: &[PromptImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        *self.0.embedded_images.lock().unwrap() += images.len();
        Ok(images
            .iter()
            .map(|image| {
                let mut sums = [0f64; 3];
                for pixel in image.rgb.pixels() {
                    for channel in 0..3 {
                        sums[channel] += f64::from(pixel[channel]);
                    }
                }
                let count = (image.rgb.width() * image.rgb.height()).max(1) as f64;
                sums.iter()
                    .map(|sum| (sum / count / 255.0) as f32 + 0.01)
                    .collect()
            })
            .collect())
    }
}
