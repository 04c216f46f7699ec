//! The engine crate's one integration test binary.

mod smoke;
