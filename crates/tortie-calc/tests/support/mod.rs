//! Shared by the integration tests: manifests in, resources or a compiled [`World`] out.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use tortie_api::codec::decode;
use tortie_api::resource::Resource;
use tortie_calc::World;

/// Decodes, defaults and validates `text`; panics on any error.
pub fn resources(text: &str) -> Vec<Resource> {
    decode("test.yaml", text, "default")
        .into_iter()
        .map(|d| {
            let (_, mut r) = d.expect("decodes");
            r.default_and_validate().expect("valid");
            r
        })
        .collect()
}

/// [`resources`] compiled; panics on any compile error.
pub fn world(text: &str) -> World {
    let w = World::from_resources(&resources(text));
    assert!(w.errors().is_empty(), "{:?}", w.errors());
    w
}
