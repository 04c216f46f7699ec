//! The committed `openapi/reasoner.json` matches the code. Regenerate with
//! `cargo run -p slc-reasoner -- openapi > openapi/reasoner.json` (or run this test with
//! `SLC_UPDATE_OPENAPI=1`).

use std::path::Path;

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/reasoner.json");
    let generated = slc_reasoner::openapi::spec_json();
    if std::env::var("SLC_UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!("{}: {error}; run with SLC_UPDATE_OPENAPI=1", path.display())
    });
    assert!(
        committed == generated,
        "openapi/reasoner.json is stale; regenerate with `cargo run -p slc-reasoner -- openapi > openapi/reasoner.json`"
    );
}

#[test]
fn the_api_has_no_field_for_reference_images_or_embeddings() {
    let spec = slc_reasoner::openapi::spec_json().to_lowercase();
    for forbidden in [
        "reference_image",
        "reference_images",
        "embedding",
        "embeddings",
    ] {
        assert!(!spec.contains(&format!("\"{forbidden}\"")), "{forbidden}");
    }
}
