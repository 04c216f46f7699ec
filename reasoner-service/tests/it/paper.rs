//! The paper's prompts, typed out again from appendix B so that the tests check the service
//! against the paper, not against its own constants. And the concepts of Figures 7, 8 and 9.

pub const TABLE_7_SYSTEM: &str = "You are an information extractor.

Task
Inspect the textual descriptions below and return one JSON object that covers every concept in the Concept List while conforming to the schema:
- “category”: permanent class, e.g. “a golden retriever puppy”, “a blue cartoon character”
- “attributes”: mutable traits, e.g. “always playful expression; dresses in trendy clothes”

Example
User prompt
Concept List:
<bo>: <bo> is a cute golden retriever puppy with a playful expression.
<shiba-sleep>: <shiba-sleep> is a shiba inu sleeping peacefully in a cozy home.

Expected output
{
  \"<bo>\": {
    \"category\": \"a golden retriever puppy\",
    \"attributes\": \"always playful expression\"
  },
  \"<shiba-sleep>\": {
    \"category\": \"a shiba inu\",
    \"attributes\": \"can sleep peacefully; lives in cozy home\"
  }
}

Rules
- Output plain English text only—no Markdown, no code fences.
- Keep every concept ID enclosed in angle brackets (<>).
- Provide exactly the two keys for each concept—no extras.
- Do not add comments or explanatory text outside the JSON object.";

pub const TABLE_8_SYSTEM: &str = "You are a visual verifier.

Task
You should answer each visual question with yes or no—nothing else.

Rules
- Provide exactly one “yes” or “no” per question.
- If there are N questions, output N tokens separated by a single space.
- Do not include any additional words, punctuation, or commentary.";

pub const TABLE_9_RULES: &str = "Rules
Use the Detection Report to answer the user’s visual question.
- category: immutable essence (e.g. “a golden retriever puppy”).
- attributes: mutable traits that may or may not be visible (e.g. “always playful expression”).
- If present = false, it means the concept is not in the image. You should not mention the concept; reply “no” if asked about its presence.
- If present = true, it means it concept is in the image. You should ground your answer strictly on the provided fields; reply “yes” if asked about its presence.";

/// Figure 7's concepts and the identities its large model extracted.
pub const FIGURE_7_BY: &str = "<by> is a young male with blonde hair and a serious expression.";
pub const FIGURE_7_HY: &str =
    "<hy> is a young female anime character with black hair and red eyes.";
pub const FIGURE_7_IDENTITIES: &[(&str, &str, &str)] = &[
    (
        "<by>",
        "a young male",
        "with blonde hair; serious expression",
    ),
    (
        "<hy>",
        "a young female anime character",
        "with black hair; red eyes",
    ),
];

pub const FIGURE_8_TR: &str = "<tr> is a young male with black hair, wearing a black jacket with a white fur-lined collar and a white emblem on the left side of his chest.";
pub const FIGURE_8_YS: &str = "<ys> is a young female anime character with long orange hair.";
pub const FIGURE_8_IDENTITIES: &[(&str, &str, &str)] = &[
    (
        "<tr>",
        "a young male",
        "has black hair; wearing a black jacket with a white fur-lined collar and a white emblem on the left side of his chest",
    ),
    (
        "<ys>",
        "a young female anime character",
        "with long orange hair",
    ),
];

pub const FIGURE_9_BUTIN: &str = "<butin> is a cream-colored Siberian Husky with striking blue eyes, relaxes comfortably in various indoor scenes, from couches to wooden floors. Known for its playful and laid-back demeanor, this Husky lounges in different positions, sometimes upside-down, showcasing its fluffy coat and cream-colored paws with an amusing, regal charm.";
pub const FIGURE_9_IDENTITIES: &[(&str, &str, &str)] = &[(
    "<butin>",
    "a cream-colored Siberian Husky with striking blue eyes",
    "playful and laid-back demeanor; fluffy coat; cream-colored paws; regal charm",
)];
