//! Wire types shared by the edge (`slc-detector`), the cloud (`slc-reasoner`) and the
//! evaluation harness. Serde and utoipa only: no logic, no I/O.
//!
//! Concept identifiers travel with their angle brackets (`"<bo>"`) wherever the paper's
//! prompts and cue sets show them; the registry's own `id` field is the bare form (`"bo"`).

pub mod ask;
pub mod concepts;
pub mod cues;
pub mod detect;
pub mod error;
pub mod reason;

pub use ask::*;
pub use concepts::*;
pub use cues::*;
pub use detect::*;
pub use error::*;
pub use reason::*;
