//! The detector crate's one integration test binary.

mod runtime_links;
