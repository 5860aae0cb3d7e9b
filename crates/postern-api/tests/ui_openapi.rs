//! The web UI's API client is generated from `ui/openapi.json`: that copy must be the
//! document the API serves, or the UI was built against another API. `scripts/build-ui.sh`
//! rewrites the copy (and regenerates the client); this test only compares.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn the_ui_copy_of_the_openapi_document_is_current() {
    let copy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/openapi.json");
    let current = format!(
        "{}\n",
        serde_json::to_string_pretty(&postern_api::openapi::document()).unwrap()
    );
    if std::env::var_os("WRITE_UI_OPENAPI").is_some() {
        std::fs::write(&copy, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&copy).unwrap_or_default();
    assert!(
        committed == current,
        "ui/openapi.json differs from the API's OpenAPI document: run scripts/build-ui.sh \
         (it rewrites the copy, regenerates the UI's client and rebuilds ui/dist)"
    );
}
