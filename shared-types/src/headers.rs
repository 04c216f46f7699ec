//! HTTP header names both services and their clients use, spelled once.

/// Correlates a turn's log lines, audit records and upstream calls across edge and cloud.
/// The edge sets it (or keeps the caller's), forwards it to the cloud, and both echo it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How many milliseconds the caller will still wait for this request. The edge sends its own
/// timeout for the reasoner call; the reasoner ends the turn (504, its upstream calls
/// cancelled) when it runs out, instead of working on for a caller that has gone.
pub const DEADLINE_MS_HEADER: &str = "x-slc-deadline-ms";

/// The edge's opaque per-tenant value (64 hex digits) by which the reasoner partitions its
/// identity cache under `SLC_IDENTITY_CACHE_SCOPE=tenant`: a hash of the tenant under a secret
/// of the edge, so the cloud tells tenants apart without learning who they are.
pub const CACHE_PARTITION_HEADER: &str = "x-slc-cache-partition";
