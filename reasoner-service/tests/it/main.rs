//! The reasoner crate's one integration test binary.

mod no_libtorch;
