//! Test-time detection (paper section 3.2.1, appendix B.1): the Table 6 prompt, the JSON
//! schema that constrains decoding to exactly the requested concepts, and the validation that
//! normalizes the model's output to the cue-set schema.

use serde_json::{Map, Value, json};
use shared_types::{Cue, CueSet};

/// Table 6's system prompt, verbatim. The paper typesets the concept placeholders in LaTeX
/// (`⟨concept_id⟩`); they are written here as the plain `<concept_id>` the model sees, and the
/// arrow as `→`. The quotation marks, the unbalanced quotes in the location examples and the
/// trailing commas of the example object are the paper's.
pub const TABLE6_SYSTEM_PROMPT: &str = "You are a high-precision concept detector.

Task

You should inspect the image and output **one** JSON object that **covers every** concept in the **Concept List** provided by the user while conforming to the schema below.

For each concept <concept_id> in the list:

- If *visible*, set:
 - “present”: `true`
 - “location-absolute”: “concise area, e.g. “top-left quadrant”
 - “location-relative”: “spatial relation, e.g. “to the left of the person in black suit”
- If *not visible*, set:
 - “present”: `false` → omit all other keys

The final output should be a JSON object like: {
  <concept_id_1>: {
    “present”: <boolean>,
    “location-absolute”: <string> or “”,
    “location-relative”: <string> or “”,
  },
  <concept_id_2>: {
    “present”: <boolean>,
    “location-absolute”: <string> or “”,
    “location-relative”: <string> or “”,
  }
  ...
}

Rules

- Output plain English text only—no Markdown, no code fences.
- Keep every concept ID enclosed in angle brackets (<>).
- If `present = false`, omit all other keys.
- Boolean literals must be lowercase `true/false`.
- Do not add any extra keys, comments, or explanatory text.";

/// Whether the concepts of one turn see each other on the edge (`SLC_CONCEPT_ISOLATION`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ConceptIsolation {
    /// The paper's way: every concept in one Table 6 prompt, one Eq. 1 adapter for all of them.
    #[default]
    Joint,
    /// One Table 6 prompt and one Eq. 1 adapter per concept, and verification per concept.
    PerConcept,
}

/// Table 6's user prompt: `Concept List` followed by one `<id>: description` line per concept.
pub fn table6_user_text(concepts: &[(String, String)]) -> String {
    let lines: Vec<String> = concepts
        .iter()
        .map(|(bracketed_id, description)| format!("{bracketed_id}: {description}"))
        .collect();
    format!("Concept List\n\n{}", lines.join("\n"))
}

/// Longest location string the schema allows when the token budget has room.
pub const LOCATION_MAX_CHARS: usize = 64;
/// Below this a location cannot say much; asking for more concepts than fit is refused.
pub const LOCATION_MIN_CHARS: usize = 8;

/// The JSON schema of a cue set for exactly these bracketed ids: every id required, no other
/// key; a present concept carries both locations, an absent one carries nothing else.
///
/// Locations are printable ASCII without quote or backslash, at most `location_chars` long:
/// every character is then one byte and every token at least one, so a complete document never
/// takes more than [`cue_set_token_budget`] tokens. Without that bound a model that keeps
/// writing one location (a small or confused one does) runs into the token limit and leaves
/// unparseable JSON.
pub fn cue_set_schema(bracketed_ids: &[String], location_chars: usize) -> Value {
    let location = json!({
        "type": "string",
        "pattern": format!("^[ !#-\\[\\]-~]{{0,{location_chars}}}$")
    });
    let present = json!({
        "type": "object",
        "properties": {
            "present": {"const": true},
            "location-absolute": location,
            "location-relative": location
        },
        "required": ["present", "location-absolute", "location-relative"],
        "additionalProperties": false
    });
    let absent = json!({
        "type": "object",
        "properties": {"present": {"const": false}},
        "required": ["present"],
        "additionalProperties": false
    });
    let mut properties = Map::new();
    for id in bracketed_ids {
        properties.insert(id.clone(), json!({"anyOf": [present, absent]}));
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": bracketed_ids,
        "additionalProperties": false
    })
}

/// Bytes of the longest document [`cue_set_schema`] admits (the grammar writes `", "` and
/// `": "` separators and no other whitespace), plus the end-of-turn token: an upper bound on
/// its tokens.
pub fn cue_set_token_budget(bracketed_ids: &[String], location_chars: usize) -> usize {
    const PRESENT_ENTRY: &str =
        r#""": {"present": true, "location-absolute": "", "location-relative": ""}, "#;
    let entries: usize = bracketed_ids
        .iter()
        .map(|id| id.len() + PRESENT_ENTRY.len() + 2 * location_chars)
        .sum();
    entries + "{}".len() + 1
}

/// The longest location length whose worst-case cue set fits in `max_tokens`, capped at
/// [`LOCATION_MAX_CHARS`]; `None` when not even [`LOCATION_MIN_CHARS`] fits.
pub fn location_chars_within(bracketed_ids: &[String], max_tokens: usize) -> Option<usize> {
    (LOCATION_MIN_CHARS..=LOCATION_MAX_CHARS)
        .rev()
        .find(|&chars| cue_set_token_budget(bracketed_ids, chars) <= max_tokens)
}

/// Parses the model's text and normalizes it to the cue-set schema for `bracketed_ids`:
/// every requested id present, nothing else, `present: false` without locations, empty
/// location strings dropped.
pub fn normalize_cue_set(text: &str, bracketed_ids: &[String]) -> Result<CueSet, String> {
    let value: Value = serde_json::from_str(text.trim())
        .map_err(|error| format!("not JSON ({error}): {text:?}"))?;
    let Value::Object(object) = value else {
        return Err(format!("not a JSON object: {text:?}"));
    };
    for key in object.keys() {
        if !bracketed_ids.contains(key) {
            return Err(format!("unrequested key {key:?}"));
        }
    }
    let mut cues = CueSet::new();
    for id in bracketed_ids {
        let entry = object
            .get(id)
            .ok_or_else(|| format!("missing concept {id}"))?;
        let Value::Object(fields) = entry else {
            return Err(format!("{id} is not an object"));
        };
        for key in fields.keys() {
            if !matches!(
                key.as_str(),
                "present" | "location-absolute" | "location-relative"
            ) {
                return Err(format!("{id} has an extra key {key:?}"));
            }
        }
        let present = fields
            .get("present")
            .and_then(Value::as_bool)
            .ok_or_else(|| format!("{id} has no boolean \"present\""))?;
        let location = |key: &str| -> Result<Option<String>, String> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.trim().to_string())),
                Some(other) => Err(format!("{id}.{key} is not a string: {other}")),
            }
        };
        let cue = if present {
            Cue {
                present: true,
                location_absolute: location("location-absolute")?,
                location_relative: location("location-relative")?,
            }
        } else {
            Cue::default()
        };
        cues.insert(id.clone(), cue);
    }
    Ok(cues)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn absent_concepts_lose_their_locations_and_empty_strings_are_dropped() {
        let text = r#"{"<bo>": {"present": false, "location-absolute": "left"},
                       "<mam>": {"present": true, "location-absolute": "center", "location-relative": ""}}"#;
        let cues = normalize_cue_set(text, &ids(&["<bo>", "<mam>"])).unwrap();
        assert_eq!(cues["<bo>"], Cue::default());
        assert_eq!(cues["<mam>"].location_absolute.as_deref(), Some("center"));
        assert_eq!(cues["<mam>"].location_relative, None);
    }

    #[test]
    fn missing_extra_and_mistyped_entries_are_rejected() {
        let two = ids(&["<bo>", "<mam>"]);
        assert!(normalize_cue_set(r#"{"<bo>": {"present": false}}"#, &two).is_err());
        assert!(
            normalize_cue_set(
                r#"{"<bo>": {"present": false}, "<mam>": {"present": false}, "<x>": {"present": false}}"#,
                &two
            )
            .is_err()
        );
        assert!(
            normalize_cue_set(
                r#"{"<bo>": {"present": "yes"}, "<mam>": {"present": false}}"#,
                &two
            )
            .is_err()
        );
        assert!(normalize_cue_set("not json", &two).is_err());
    }

    #[test]
    fn the_longest_admitted_cue_set_fits_its_budget() {
        let two = ids(&["<bo>", "<shiba-sleep>"]);
        let longest = serde_json::to_string(&json!({
            "<bo>": {"present": true, "location-absolute": "a".repeat(20), "location-relative": "b".repeat(20)},
            "<shiba-sleep>": {"present": true, "location-absolute": "c".repeat(20), "location-relative": "d".repeat(20)}
        }))
        .unwrap()
        .replace(',', ", ")
        .replace(':', ": ");
        assert!(longest.len() < cue_set_token_budget(&two, 20));
        assert!(
            longest.len() + 8 >= cue_set_token_budget(&two, 20),
            "the bound is tight"
        );
        assert_eq!(
            location_chars_within(&two, 100_000),
            Some(LOCATION_MAX_CHARS)
        );
        let fits = cue_set_token_budget(&two, 30);
        assert_eq!(location_chars_within(&two, fits), Some(30));
        assert_eq!(location_chars_within(&two, fits - 1), Some(29));
        assert_eq!(location_chars_within(&two, 10), None);
        let pattern = cue_set_schema(&two, 30)["properties"]["<bo>"]["anyOf"][0]["properties"]
            ["location-absolute"]["pattern"]
            .clone();
        assert_eq!(pattern, json!("^[ !#-\\[\\]-~]{0,30}$"));
    }
}
