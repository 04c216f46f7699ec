//! `slc-eval`: the paper's benchmarks (Yo'LLaVA and MC-LLaVA recognition, visual and
//! text-only multiple choice, SQA) run against a live SLC edge through its HTTP API only.
//! No model code: it reads evaluation files, registers concepts, asks `POST /v1/ask`, scores
//! strictly (and leniently for comparison) and writes a JSON/Markdown/PNG report.

pub mod cache;
pub mod client;
pub mod concepts_file;
pub mod config;
pub mod dataset_root;
pub mod error;
pub mod eval_mode;
pub mod items;
pub mod metrics;
pub mod options;
pub mod readers;
pub mod report;
pub mod run;
pub mod runner;
pub mod scoring;

pub use eval_mode::EvalMode;
