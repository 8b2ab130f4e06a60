//! The store's modules stay in layers (see `src/store.rs`): no module
//! imports one that imports it back.

use std::path::Path;

use corral_testkit::layers;

#[test]
fn the_store_is_layered_without_circles() {
    let graph = layers::graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The graph was read: the top layer uses the client beneath it.
    assert!(graph["store"].contains("client"), "{graph:#?}");
    assert!(graph["client"].contains("backend"), "{graph:#?}");
    let circles = layers::circles(&graph);
    assert!(circles.is_empty(), "circles: {circles:?}\n{graph:#?}");
}
