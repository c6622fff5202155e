//! URIs from text (OMA-DM form and HTTP paths): never a panic; what parses
//! prints back to itself, and stays within the limits it was parsed with.
#![no_main]

use dmtree_core::{Uri, UriLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let limits = UriLimits::default();
    if let Ok(uri) = Uri::parse(text, &limits) {
        let again = Uri::parse(&uri.to_string(), &limits).expect("a printed URI parses");
        assert_eq!(again, uri);
        assert!(uri.segments().count() <= limits.max_segments);
        let _ = Uri::parse_relative(&uri, text, &limits);
    }
    if let Ok(uri) = Uri::from_http_path(text, &limits)
        && !uri.is_root()
    {
        let again = Uri::from_http_path(&uri.to_http_path()["/tree".len()..], &limits).expect("an HTTP path parses");
        assert_eq!(again, uri);
    }
});
