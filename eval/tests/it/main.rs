//! The harness's integration tests: one binary, one module per concern.

mod chart;
mod end_to_end;
mod metrics;
mod readers;
mod scoring;
mod scripted_edge;
mod shuffle;

use std::path::PathBuf;

/// `/work/shared/data` as the brief names it (`../shared/data` from the repository root), or
/// `SLC_SHARED_DATA`. A missing folder fails the test with instructions, never a skip.
pub fn shared_data() -> PathBuf {
    if let Ok(path) = std::env::var("SLC_SHARED_DATA") {
        return PathBuf::from(path);
    }
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        repository.join("../shared/data"),
        repository.join("../../shared/data"),
    ];
    for candidate in &candidates {
        if candidate.join("eval").is_dir() {
            return candidate
                .canonicalize()
                .expect("an existing folder canonicalizes");
        }
    }
    panic!(
        "the sample data folder is missing: looked for {} (set SLC_SHARED_DATA to its path; \
         see /work/shared/data/README.md)",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    );
}
