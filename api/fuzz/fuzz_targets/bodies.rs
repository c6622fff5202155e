//! REST request bodies, decoded as the server decodes them: PUT/POST node
//! bodies, PATCH leaves, sessions, renames and copies. Never a panic, and
//! every refusal is a typed error (the server maps each to a 4xx).
#![no_main]

use std::collections::BTreeMap;

use dmtree_api::json::{CopyBody, NodeBody, OpenSession, RenameBody, patch_leaves};
use dmtree_core::{Uri, UriLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = UriLimits::default();
    let base = Uri::parse("./config/app", &limits).expect("a valid base");
    if let Ok(body) = serde_json::from_slice::<NodeBody>(data) {
        let _ = body.write(&base);
    }
    if let Ok(leaves) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(data)
        && let Ok(parsed) = patch_leaves(&base, leaves, &limits)
    {
        for (rel, _) in parsed {
            // A PATCH never reaches outside its base.
            assert!(rel.segments().all(|s| s != ".." && s != "." && !s.is_empty()));
        }
    }
    let _ = serde_json::from_slice::<OpenSession>(data);
    let _ = serde_json::from_slice::<RenameBody>(data);
    let _ = serde_json::from_slice::<CopyBody>(data);
});
