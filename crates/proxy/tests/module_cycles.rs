//! The proxy's top-level modules depend on each other one way: this test
//! reads every `crate::`/`super::` path in `src/**.rs`, builds the graph of
//! top-level modules (`config`, `http`, `listener`, ...) and fails on any
//! cycle, naming the modules in it and one import behind each edge.
//!
//! It reads source text rather than compiler output, so it is approximate
//! in one way that errs strict: a path in a comment-free line counts even if
//! it sits in a `#[cfg(test)]` block. `lib.rs` and `main.rs` (the crate
//! root, which names every module) are not nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One edge's evidence: the file and line that made it.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.len() > 10,
        "expected the proxy's modules under {}, found {:?}",
        src.display(),
        graph.keys().collect::<Vec<_>>()
    );
    let cycles: Vec<Vec<String>> = strongly_connected(&graph)
        .into_iter()
        .filter(|component| component.len() > 1)
        .collect();
    if cycles.is_empty() {
        return;
    }
    let mut report = String::new();
    for cycle in &cycles {
        report.push_str(&format!("cycle of {}: {}\n", cycle.len(), cycle.join(", ")));
        let members: BTreeSet<&String> = cycle.iter().collect();
        for from in cycle {
            for (to, evidence) in &graph[from] {
                if members.contains(to) {
                    report.push_str(&format!("  {from} -> {to}   ({evidence})\n"));
                }
            }
        }
    }
    panic!("the proxy's top-level modules import each other in a cycle:\n{report}");
}

#[test]
fn the_checker_sees_a_cycle() {
    // The checker itself must be able to fail: a made-up graph with a
    // two-module cycle and a one-way edge.
    let mut graph = Edges::new();
    let edge = |graph: &mut Edges, from: &str, to: &str| {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), String::new());
        graph.entry(to.into()).or_default();
    };
    edge(&mut graph, "a", "b");
    edge(&mut graph, "b", "a");
    edge(&mut graph, "b", "c");
    let cycles: Vec<_> = strongly_connected(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert_eq!(cycles, vec![vec!["a".to_string(), "b".to_string()]]);
    // And the parser resolves `super::` and grouped imports.
    let deps = dependencies(
        "use super::{x, y::Z};\nuse crate::{p::Q, r};\n",
        &["m", "n"],
    );
    let names: BTreeSet<_> = deps.iter().map(|(module, _)| module.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["m", "p", "r"]));
}

/// Every top-level module and the top-level modules it reaches.
fn module_graph(src: &Path) -> Edges {
    let mut graph = Edges::new();
    for file in rust_files(src) {
        let relative = file
            .strip_prefix(src)
            .unwrap_or_else(|_| panic!("{} is under {}", file.display(), src.display()));
        let Some(path) = module_path(relative) else {
            continue;
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        let top = path[0].clone();
        let node = graph.entry(top.clone()).or_default();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        for (target, line) in dependencies(&text, &path) {
            if target != top {
                node.entry(target)
                    .or_insert_with(|| format!("{}:{line}", relative.display()));
            }
        }
    }
    // Paths to names that are not modules (`crate::SomeType` re-exported
    // from lib.rs) are not edges.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|target, _| modules.contains(target));
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
            .path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `http/route.rs` → [http, route]; `http/mod.rs` → [http]; the crate
/// root files → none.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// The top-level modules `text` (the file of module `path`) names, each
/// with the line it was first seen on. Inline `mod name {` blocks deepen
/// the path that `super::` is resolved against.
fn dependencies(text: &str, path: &[&str]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    // (brace depth at which an inline module opened) for each open one.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        let trimmed = line.trim_start();
        let opens_module = (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
            && trimmed.trim_end().ends_with('{');
        let here = path.len() + inline.len();
        for (position, _) in line.match_indices("crate::") {
            if !preceded_by_ident(&line, position) {
                collect(&line[position + "crate::".len()..], &mut found, index + 1);
            }
        }
        for (position, _) in line.match_indices("super::") {
            if preceded_by_ident(&line, position) || line[..position].ends_with("super::") {
                continue;
            }
            let mut rest = &line[position..];
            let mut up = 0;
            while let Some(after) = rest.strip_prefix("super::") {
                up += 1;
                rest = after;
            }
            // `super` from depth `here` names the module at depth here-up.
            let base = here.saturating_sub(up);
            if base == 0 {
                collect(rest, &mut found, index + 1);
            } else if let Some(top) = path.first() {
                found.push((top.to_string(), index + 1));
            }
        }
        for ch in line.chars() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if inline.last() == Some(&depth) {
                        inline.pop();
                    }
                }
                _ => {}
            }
        }
        if opens_module {
            inline.push(depth - 1);
        }
    }
    found
}

/// The first segment(s) after `crate::`: one name, or each name of a
/// `{a, b::c}` group.
fn collect(rest: &str, found: &mut Vec<(String, usize)>, line: usize) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut nesting = 0;
        let mut item = String::new();
        let mut items = Vec::new();
        for ch in group.chars() {
            match ch {
                '{' => nesting += 1,
                '}' if nesting == 0 => break,
                '}' => nesting -= 1,
                ',' if nesting == 0 => items.push(std::mem::take(&mut item)),
                _ => item.push(ch),
            }
        }
        items.push(item);
        for item in items {
            let name = leading_ident(item.trim());
            if !name.is_empty() && name != "self" {
                found.push((name, line));
            }
        }
    } else {
        let name = leading_ident(rest);
        if !name.is_empty() {
            found.push((name, line));
        }
    }
}

fn leading_ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn preceded_by_ident(line: &str, position: usize) -> bool {
    line[..position]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The line without a `//` comment (doc comments included). A `//` inside
/// a string literal is rare enough in this crate's paths to ignore.
fn strip_comment(line: &str) -> String {
    let mut in_string = false;
    let mut previous = ' ';
    for (position, ch) in line.char_indices() {
        match ch {
            '"' if previous != '\\' => in_string = !in_string,
            '/' if !in_string && previous == '/' => return line[..position - 1].to_string(),
            _ => {}
        }
        previous = ch;
    }
    line.to_string()
}

/// Tarjan's strongly connected components, each sorted, in a stable order.
fn strongly_connected(graph: &Edges) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Edges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            let targets = self.graph.get(node).into_iter().flat_map(|t| t.keys());
            for target in targets {
                let target = target.as_str();
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[node].min(self.low[target]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(target) {
                    let low = self.low[node].min(self.index[target]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.to_string());
                    if member == node {
                        break;
                    }
                }
                component.sort();
                self.components.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.components.sort();
    walk.components
}
