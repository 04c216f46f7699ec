//! Wire types shared by the edge (`slc-detector`), the cloud (`slc-reasoner`) and the
//! evaluation harness. Serde and utoipa only, no I/O; the logic is what both sides must agree
//! on: the concept-id rule and the caps on user text (`limits`).
//!
//! Concept identifiers travel with their angle brackets (`"<bo>"`) wherever the paper's
//! prompts and cue sets show them; the registry's own `id` field is the bare form (`"bo"`).

pub mod ask;
pub mod concept_id;
pub mod concepts;
pub mod conversations;
pub mod cues;
pub mod detect;
pub mod error;
pub mod headers;
pub mod limits;
pub mod reason;
pub mod scenarios;
pub mod stream;

pub use ask::*;
pub use concept_id::{ConceptId, InvalidConceptId, MAX_CONCEPT_ID_LEN};
pub use concepts::*;
pub use conversations::*;
pub use cues::*;
pub use detect::*;
pub use error::*;
pub use headers::{CACHE_PARTITION_HEADER, DEADLINE_MS_HEADER, REQUEST_ID_HEADER};
pub use reason::*;
pub use scenarios::*;
pub use stream::*;
