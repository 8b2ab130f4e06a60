//! The import graph of a crate's modules, for tests that keep its layers
//! layered: a module that imports from a module which imports it back (or
//! through others) makes a circle, and circles are what make a tree hard
//! to change.
//!
//! The graph is read from the source, not from the compiler: each
//! `crate::a` or `crate::a::b` path (and `super::x` inside a submodule) in
//! a line of code, outside comments and outside the `#[cfg(test)] mod
//! tests` block at the end of a file, is an edge to the module it names.
//! Declaring a child module (`mod x;`) is not an edge: a parent owns its
//! children, and a child that imports its parent's items makes the circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module (`a` or `a::b`) to the modules of the same crate it imports.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph of the crate whose sources are under `src`.
///
/// # Panics
///
/// If `src` cannot be read.
pub fn graph(src: &Path) -> Graph {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let mut graph = Graph::new();
    for (module, text) in &files {
        let code = text
            .find("#[cfg(test)]\nmod tests")
            .map_or(text.as_str(), |end| &text[..end]);
        let mut edges = BTreeSet::new();
        for line in code.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            for (prefix, base) in [("crate::", None), ("super::", parent(module))] {
                if prefix == "super::" && base.is_none() {
                    continue;
                }
                for (at, _) in line.match_indices(prefix) {
                    let path = &line[at + prefix.len()..];
                    let names: Vec<&str> = path
                        .split("::")
                        .take(2)
                        .map(|name| {
                            name.split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                                .next()
                                .unwrap_or("")
                        })
                        .collect();
                    let full = |n: usize| {
                        let tail = names[..n].join("::");
                        match base {
                            Some(base) if prefix == "super::" => format!("{base}::{tail}"),
                            _ => tail,
                        }
                    };
                    let target = [2, 1]
                        .into_iter()
                        .filter(|&n| n <= names.len() && names[..n].iter().all(|n| !n.is_empty()))
                        .map(full)
                        .find(|candidate| files.contains_key(candidate))
                        .or_else(|| base.filter(|_| prefix == "super::").map(str::to_owned));
                    if let Some(target) = target.filter(|target| target != module) {
                        edges.insert(target);
                    }
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// The circles of `graph`: its strongly connected components of more than
/// one module, each sorted, in order.
pub fn circles(graph: &Graph) -> Vec<Vec<String>> {
    // Two modules are in one circle when each reaches the other.
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.clone()];
        while let Some(module) = pending.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|module| (module, reach(module))).collect();
    let mut circles: Vec<Vec<String>> = Vec::new();
    for (module, reached) in &reaches {
        let circle: Vec<String> = reached
            .iter()
            .filter(|other| reaches[other].contains(*module))
            .cloned()
            .collect();
        if circle.len() > 1 && !circles.contains(&circle) {
            circles.push(circle);
        }
    }
    circles
}

fn parent(module: &str) -> Option<&str> {
    module.rsplit_once("::").map(|(parent, _)| parent)
}

/// Every `.rs` file under `dir`, by module path, but the crate root.
fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
            continue;
        }
        let Some(relative) = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .and_then(|p| p.strip_suffix(".rs"))
        else {
            continue;
        };
        let module = relative.trim_end_matches("/mod").replace('/', "::");
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        files.insert(module, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circles_are_found_and_layers_are_not_circles() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n");
        write("a.rs", "use crate::b::B;\n// crate::d in a comment\n");
        write("b.rs", "use crate::c::{C, D};\n");
        write("c.rs", "pub struct C;\nfn f() -> crate::a::A { todo!() }\n");
        write(
            "d/mod.rs",
            "mod e;\npub struct D;\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n",
        );
        write("d/e.rs", "use super::D;\n");
        let graph = graph(dir.path());
        assert_eq!(graph["a"], BTreeSet::from(["b".to_owned()]));
        assert_eq!(
            graph["d"],
            BTreeSet::new(),
            "tests and child modules are no edges"
        );
        assert_eq!(graph["d::e"], BTreeSet::from(["d".to_owned()]));
        assert_eq!(circles(&graph), [["a", "b", "c"]]);
    }
}
