//! The module graph of the library: which top-level module (`src/<name>.rs` or `src/<name>/`) uses
//! which, read from the `crate::` paths in src/ (comments and `#[cfg(test)]` code left out, since a
//! test may reach anywhere). Two rules a newcomer can rely on:
//!
//! - nothing in the library uses `commands` (the CLI verbs use everything, so an arrow back makes a
//!   cycle through the whole crate), and
//! - no import cycle between top-level modules: every arrow between two modules runs one way, so
//!   each can be read (and tested) with only what is below it in mind.
//!
//! Run with `cargo test --test module_graph`. No tool to install (cargo-modules needs a network
//! install and a nightly-style analysis); a `use crate::…` scan is enough at the top level.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules in `src/` and, for each, the modules its non-test code names through `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>> {
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>> = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("below src");
        let top = relative
            .components()
            .next()
            .and_then(|first| first.as_os_str().to_str())
            .expect("a UTF-8 file name")
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let name = file
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name == "tests.rs" || name == "test_support.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let uses = graph.entry(top.clone()).or_default();
        for target in crate_paths(&library_code(&text)) {
            if target != top {
                uses.entry(target).or_default().insert(relative.to_owned());
            }
        }
    }
    graph
}

fn rust_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(folder)
        .expect("a readable folder")
        .map(|entry| entry.expect("a folder entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// `text` without its comments and without the `#[cfg(test)] mod … {` that, by this crate's habit,
/// closes a file (a `#[cfg(test)] mod tests;` declaration is skipped over).
fn library_code(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            let next = lines.peek().map_or("", |next| next.trim());
            if (next.starts_with("mod ") && !next.ends_with(';')) || next.starts_with("#[allow") {
                break;
            }
        }
        let without_comment = line.split("//").next().unwrap_or("");
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// The first segment of every `crate::x` path in `code`, also inside `use crate::{x, y::z}`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `$crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                if let Some(name) = first_ident(item) {
                    found.insert(name);
                }
            }
        } else if let Some(name) = first_ident(rest) {
            found.insert(name);
        }
    }
    found
}

/// The index of the `}` that closes a group whose `{` was just before `text`.
fn matching_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// The comma-separated items of a `use` group, not splitting inside nested groups.
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

fn first_ident(text: &str) -> Option<String> {
    let name: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, module: &'a str) {
            let next = self.index.len();
            self.index.insert(module, next);
            self.low.insert(module, next);
            self.stack.push(module);
            self.on_stack.insert(module);
            let graph = self.graph;
            for target in graph.get(module).into_iter().flat_map(|uses| uses.keys()) {
                let target = target.as_str();
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[module].min(self.low[target]);
                    self.low.insert(module, low);
                } else if self.on_stack.contains(target) {
                    let low = self.low[module].min(self.index[target]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut component = BTreeSet::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.insert(member.to_owned());
                    if member == module {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for module in graph.keys() {
        if !walk.index.contains_key(module.as_str()) {
            walk.visit(module);
        }
    }
    walk.found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn nothing_in_the_library_uses_commands() {
    let graph = module_graph(&src());
    let users: Vec<String> = graph
        .iter()
        .filter(|(module, _)| module.as_str() != "cli" && module.as_str() != "commands")
        .filter_map(|(module, uses)| {
            uses.get("commands")
                .map(|files| format!("{module} ({files:?})"))
        })
        .collect();
    assert!(
        users.is_empty(),
        "library modules use `commands` (move what they need to a leaf module, as exit.rs and \
         time_format.rs): {users:?}"
    );
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = module_graph(&src());
    assert!(
        graph.contains_key("daemon") && graph["daemon"].contains_key("config"),
        "the scan found no `crate::` paths; the parser is broken: {graph:?}"
    );
    let describe = |cycle: &BTreeSet<String>| {
        let arrows: Vec<String> = cycle
            .iter()
            .flat_map(|from| {
                graph[from]
                    .iter()
                    .filter(|(to, _)| cycle.contains(*to))
                    .map(move |(to, files)| format!("{from} -> {to} in {files:?}"))
            })
            .collect();
        arrows.join("; ")
    };
    let found: Vec<String> = cycles(&graph)
        .iter()
        .map(|cycle| format!("{cycle:?}: {}", describe(cycle)))
        .collect();
    assert!(
        found.is_empty(),
        "import cycles between modules (move the shared concept into a module below both, or \
         let the lower one own a plain type the upper one reads): {found:#?}"
    );
}

#[test]
fn the_scan_sees_grouped_uses_and_skips_comments_and_tests() {
    let code = library_code(
        "use crate::{a::b, c, d::{e, f}};\n\
         // use crate::commented;\n\
         let x = crate::g::h(); // crate::trailing\n\
         #[cfg(test)]\n\
         mod tests {\n    use crate::in_test;\n}\n",
    );
    let found: Vec<String> = crate_paths(&code).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g"]);
}

#[test]
fn a_cycle_is_found() {
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned(), BTreeSet::new());
    }
    let found = cycles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], ["a", "b", "c"].map(str::to_owned).into());
}
