//! `cargo xtask tidy`: structure checks no compiler makes.
//!
//! - The module graph of `controller/src` (its top-level modules, with an edge for every
//!   `crate::<module>` path a file names outside its tests) has no cycle: a cycle means two
//!   modules each need the other, and neither has one home. Any cycle found is printed.
//! - In the agent, `init` (PID 1) may use `run` (the protocol loop), never the reverse.
//!
//! Both are read from the source text (`crate::` paths outside comments, test code cut off at
//! `#[cfg(test)]`),
//! which is enough for a crate that always names other modules through `crate::`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::paths::workspace_root;

/// Entry point of `cargo xtask tidy`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        bail!("cargo xtask tidy takes no arguments (got {arg})");
    }
    let root = workspace_root();
    let mut problems = Vec::new();
    let controller = module_edges(&sources(&root.join("controller/src"))?);
    for cycle in cycles(&controller) {
        problems.push(format!(
            "controller/src: module cycle {}",
            cycle.join(" -> ")
        ));
    }
    let agent = module_edges(&sources(&root.join("agent/src"))?);
    if agent.get("run").is_some_and(|uses| uses.contains("init")) {
        problems.push("agent/src: run uses init (PID 1 may use run, not the reverse)".into());
    }
    println!(
        "xtask tidy: controller/src has {} modules and {} edges",
        controller.len(),
        controller.values().map(BTreeSet::len).sum::<usize>()
    );
    if problems.is_empty() {
        println!("xtask tidy: ok");
        return Ok(());
    }
    for p in &problems {
        println!("xtask tidy: {p}");
    }
    bail!("{} structure problem(s)", problems.len())
}

/// Every `.rs` file under `dir`, as (path relative to `dir`, text), test files left out.
fn sources(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "tests" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// PURE: the top-level module a file belongs to (`serve.rs` and `api/nodes.rs` -> `serve`,
/// `api`); `None` for the crate roots.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// PURE: the top-level module graph: for each module, the other modules its files name as
/// `crate::<module>` before any `#[cfg(test)]`.
fn module_edges(files: &[(PathBuf, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let Some(from) = top_module(rel) else {
            continue;
        };
        let uses = graph.entry(from.clone()).or_default();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        for (i, _) in code.match_indices("crate::") {
            // `$crate::` in macros is the same crate; any other `…crate::` is not ours.
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + "crate::".len()..];
            let to: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if to.is_empty() || to == from || !to.starts_with(|c: char| c.is_ascii_lowercase()) {
                continue;
            }
            // `use crate::{a, b}` names several modules.
            if rest.starts_with('{') {
                continue;
            }
            uses.insert(to);
        }
        for group in code.split("crate::{").skip(1) {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let m: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !m.is_empty() && m != from && m.starts_with(|c: char| c.is_ascii_lowercase()) {
                    uses.insert(m);
                }
            }
        }
    }
    // Only edges to modules that exist (a `crate::X` of a re-exported item is not a module).
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| known.contains(m));
    }
    graph
}

/// PURE: the cycles of a graph: each strongly connected component of more than one module,
/// as a path through it that returns to its start.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(n) = stack.pop() {
            for m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reach_all: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|k| (k, reach(k))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for k in graph.keys() {
        if done.contains(k) || !reach_all[k].contains(k) {
            continue;
        }
        let component: BTreeSet<String> = graph
            .keys()
            .filter(|m| reach_all[k].contains(*m) && reach_all[*m].contains(k))
            .cloned()
            .collect();
        done.extend(component.iter().cloned());
        let mut shown = shortest_loop(graph, k, &component);
        if component.len() > shown.len() - 1 {
            let others: Vec<&str> = component
                .iter()
                .filter(|m| !shown.contains(m))
                .map(String::as_str)
                .collect();
            shown.push(format!("(with {})", others.join(", ")));
        }
        out.push(shown);
    }
    out
}

/// A shortest path from `start` back to itself inside `component` (breadth first).
fn shortest_loop(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    component: &BTreeSet<String>,
) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_owned()]);
    while let Some(n) = queue.pop_front() {
        for m in graph.get(&n).into_iter().flatten() {
            if !component.contains(m) {
                continue;
            }
            if m == start {
                let mut path = vec![start.to_owned()];
                let mut at = n.clone();
                while at != start {
                    path.push(at.clone());
                    at = prev.get(&at).cloned().unwrap_or_else(|| start.to_owned());
                }
                path.push(start.to_owned());
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if !prev.contains_key(m) {
                prev.insert(m.clone(), n.clone());
                queue.push_back(m.clone());
            }
        }
    }
    vec![start.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn edges_from_crate_paths_outside_tests() {
        let g = module_edges(&files(&[
            ("lib.rs", "pub mod api; pub mod store; pub mod model;"),
            (
                "api/mod.rs",
                "use crate::store::Store;\nuse crate::{model, api::x};",
            ),
            (
                "api/nodes.rs",
                "fn f() { crate::model::Node::new(); }\n/// See [`crate::live::x`].\n// crate::ui",
            ),
            (
                "store/mod.rs",
                "use crate::model::Node;\n#[cfg(test)]\nmod t { use crate::api; }",
            ),
            (
                "model.rs",
                "macro_rules! m { () => { $crate::store::x() } }",
            ),
        ]));
        let e = |m: &str| g[m].iter().cloned().collect::<Vec<_>>();
        assert_eq!(e("api"), ["model", "store"]);
        assert_eq!(e("store"), ["model"]);
        assert_eq!(e("model"), ["store"]);
        assert!(!g.contains_key("lib"));
    }

    #[test]
    fn cycles_are_found_and_shown_as_loops() {
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a", "d"]),
            ("d", vec![]),
            ("e", vec!["f"]),
            ("f", vec!["e"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            cycles(&g),
            vec![vec!["a", "b", "c", "a"], vec!["e", "f", "e"]]
        );
        let acyclic: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
            ("b".to_owned(), BTreeSet::new()),
        ]
        .into_iter()
        .collect();
        assert!(cycles(&acyclic).is_empty());
    }
}
