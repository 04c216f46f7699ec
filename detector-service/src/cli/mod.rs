//! Subcommands of the `slc-detector` binary other than `serve`.

pub mod bench;
pub mod embed;
pub mod generate;
pub mod generate_constraint;
pub mod make_checkpoint;
pub mod meta_train;
