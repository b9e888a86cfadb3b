//! Shared by the integration tests: manifests in, a compiled [`World`] out.

use tortie_api::codec::decode;
use tortie_calc::World;

/// Decodes, defaults and validates `text` and compiles it; panics on any error.
pub fn world(text: &str) -> World {
    let resources: Vec<_> = decode("test.yaml", text, "default")
        .into_iter()
        .map(|d| {
            let (_, mut r) = d.expect("decodes");
            r.default_and_validate().expect("valid");
            r
        })
        .collect();
    let w = World::from_resources(&resources);
    assert!(w.errors().is_empty(), "{:?}", w.errors());
    w
}
