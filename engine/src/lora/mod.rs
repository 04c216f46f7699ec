//! Meta-personalization on the edge (the SLC paper, section 3.3): LoRA adapters in HF PEFT's
//! on-disk format, applied to Qwen2.5-VL unmerged (switchable per request) or merged, the
//! choice of adapter for a turn by CLIP-embedding similarity (Eq. 1), and the bank of
//! meta-concept adapters the detector loads at start, with the adapter (or top-K mix) a loaded
//! model runs now (`active.rs`, names validated in `mix.rs`).

pub mod active;
pub mod adapter;
pub mod apply;
pub mod bank;
pub mod config;
pub mod mix;
pub mod selection;
pub mod targets;

pub use active::ActiveAdapter;
pub use adapter::{LoraAdapter, LoraWeights, save_peft_adapter};
pub use apply::{attach_adapter, detach_adapters, merge_adapter};
pub use bank::{
    AdapterBank, BankDictionary, BankSelection, ClipModelId, MetaConcept, MetaConceptEntry,
};
pub use config::{AdapterConfig, TargetModules};
pub use mix::{AdapterMix, AdapterNameError, MIX_SEPARATOR, mix_members};
pub use selection::{
    AdapterChoice, choose_adapters, concept_embedding, cosine_similarity, scenario_embedding,
};
