//! Subcommands of the `slc-detector` binary other than `serve`.

pub mod bench;
pub mod bench_accuracy;
pub mod bench_grammar;
pub mod bench_load;
pub mod check;
pub mod embed;
pub mod generate;
pub mod generate_constraint;
pub mod grammar_walk;
pub mod make_checkpoint;
pub mod meta_train;
pub mod tokenize;
