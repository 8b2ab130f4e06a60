//! The server's modules import one another without circles, but for the
//! router's state (`app`, which holds the metrics, whose middleware reads
//! the state, and the history of `/api/stats`, whose sampler and handler
//! read it).

use std::path::Path;

use corral_testkit::layers;

#[test]
fn the_server_has_no_circles_beyond_the_routers_state() {
    let graph = layers::graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The graph was read: uploads are admitted by the admission module.
    assert!(graph["upload"].contains("admission"), "{graph:#?}");
    let circles = layers::circles(&graph);
    assert_eq!(circles, [["app", "metrics", "stats"]], "{graph:#?}");
}
