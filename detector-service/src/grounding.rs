//! Grounding boxes (beyond the paper, opt-in with `boxes: true`): for each concept the cue set
//! reports present, one more small-model call asks Qwen2.5-VL for the concept's `bbox_2d`.
//!
//! Qwen2.5-VL grounds in absolute pixel coordinates of the image as it saw it, after
//! `smart_resize` (both sides multiples of 28 within the processor's pixel budget), so the box
//! is mapped back to the original image's pixels and clamped to it. The output is constrained
//! by a JSON schema whose four coordinates are integers (llguidance masks every other token),
//! so the parse below only has to check the values, never the syntax.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::{ContentPart, PromptImage, PromptMessage, ResizeRule, Role};

/// Tokens a box takes: `{"bbox_2d": [1234, 1234, 1234, 1234]}` with room to spare.
pub const BOX_MAX_TOKENS: u32 = 48;

/// The grounding question for one concept, in the form Qwen2.5-VL's grounding was trained
/// on ("Locate … and output its bbox coordinates in JSON format"), with the concept's
/// description so the model knows what `<id>` is.
pub fn grounding_messages(
    image: PromptImage,
    bracketed_id: &str,
    description: &str,
) -> Vec<PromptMessage> {
    let text = format!(
        "{description}\nLocate {bracketed_id} in the image, and output its bbox_2d coordinates in JSON format."
    );
    vec![PromptMessage {
        role: Role::User,
        content: vec![ContentPart::Image(image), ContentPart::Text(text)],
    }]
}

/// `{"bbox_2d": [x1, y1, x2, y2]}`: four integers within the resized image.
pub fn box_schema(resized: (u32, u32)) -> Value {
    let longest = resized.0.max(resized.1);
    json!({
        "type": "object",
        "properties": {
            "bbox_2d": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": longest},
                "minItems": 4,
                "maxItems": 4
            }
        },
        "required": ["bbox_2d"],
        "additionalProperties": false
    })
}

/// The image's size as the model sees it, (width, height); `None` for an image the rule
/// refuses (the detection itself would have failed on it first).
pub fn resized_size(rule: ResizeRule, width: u32, height: u32) -> Option<(u32, u32)> {
    let (resized_height, resized_width) = slc_engine::preprocess::qwen2_vl::smart_resize(
        height,
        width,
        rule.factor,
        rule.min_pixels,
        rule.max_pixels,
    )
    .ok()?;
    Some((resized_width as u32, resized_height as u32))
}

#[derive(Deserialize)]
struct BoxOutput {
    bbox_2d: [i64; 4],
}

/// The model's box, in the resized image's pixels, mapped to the original's: scaled per
/// axis, rounded, clamped to the image, corners ordered.
pub fn original_box(
    text: &str,
    resized: (u32, u32),
    original: (u32, u32),
) -> Result<[u32; 4], String> {
    let output: BoxOutput =
        serde_json::from_str(text.trim()).map_err(|error| format!("not a bbox_2d: {error}"))?;
    Ok(map_box(output.bbox_2d, resized, original))
}

pub fn map_box(bbox: [i64; 4], resized: (u32, u32), original: (u32, u32)) -> [u32; 4] {
    let scale = |value: i64, from: u32, to: u32| -> u32 {
        let scaled = value as f64 * f64::from(to) / f64::from(from.max(1));
        scaled.round().clamp(0.0, f64::from(to)) as u32
    };
    let x1 = scale(bbox[0], resized.0, original.0);
    let y1 = scale(bbox[1], resized.1, original.1);
    let x2 = scale(bbox[2], resized.0, original.0);
    let y2 = scale(bbox[3], resized.1, original.1);
    [x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN: ResizeRule = ResizeRule {
        factor: 28,
        min_pixels: 56 * 56,
        max_pixels: 28 * 28 * 1280,
    };

    #[test]
    fn boxes_scale_per_axis_clamp_and_order() {
        // 1000×500 resized to 1008×504 (multiples of 28, the aspect kept).
        let resized = resized_size(QWEN, 1000, 500).unwrap();
        assert_eq!(resized, (1008, 504));
        let text = r#"{"bbox_2d": [504, 252, 1008, 504]}"#;
        assert_eq!(
            original_box(text, resized, (1000, 500)).unwrap(),
            [500, 250, 1000, 500]
        );
        // Out of the image and reversed: clamped, then ordered.
        assert_eq!(
            map_box([2000, -5, 100, 600], resized, (1000, 500)),
            [99, 0, 1000, 500]
        );
        assert!(original_box("{\"bbox_2d\": [1, 2]}", resized, (1000, 500)).is_err());
    }

    #[test]
    fn a_large_photo_is_mapped_from_the_budgeted_size() {
        // 4000×3000 is over max_pixels: the model sees a smaller image.
        let resized = resized_size(QWEN, 4000, 3000).unwrap();
        assert!(u64::from(resized.0) * u64::from(resized.1) <= QWEN.max_pixels);
        assert_eq!((resized.0 % 28, resized.1 % 28), (0, 0));
        let whole = map_box(
            [0, 0, i64::from(resized.0), i64::from(resized.1)],
            resized,
            (4000, 3000),
        );
        assert_eq!(whole, [0, 0, 4000, 3000]);
    }

    #[test]
    fn the_schema_allows_exactly_four_integers() {
        let schema = box_schema((1008, 504));
        let items = &schema["properties"]["bbox_2d"];
        assert_eq!(items["items"]["type"], "integer");
        assert_eq!(
            (items["minItems"].as_u64(), items["maxItems"].as_u64()),
            (Some(4), Some(4))
        );
        assert_eq!(items["items"]["maximum"], 1008);
    }
}
