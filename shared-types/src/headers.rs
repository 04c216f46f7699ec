//! HTTP header names both services and their clients use, spelled once.

/// Correlates a turn's log lines, audit records and upstream calls across edge and cloud.
/// The edge sets it (or keeps the caller's), forwards it to the cloud, and both echo it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
