//! The architecture the folders show, checked: libraries never depend on a plugin or on the
//! runtime, plugins never on the runtime or on each other, nothing on the runtime; and inside
//! every crate, no module imports in a circle (a file that uses another, which uses it back,
//! directly or through others).
//!
//! Modules are the crate's files (`a/b.rs` or `a/b/mod.rs` is `a::b`); an edge is any
//! `crate::…` or `super::…` path in a file, resolved to the deepest module it names (a name a
//! module re-exports from a child, `pub use child::Name`, leads to that child). Inline test
//! modules belong to their file.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// What a workspace member is, from its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Library,
    Plugin,
    Runtime,
    /// Tests, benchmarks, fixtures, fuzzing: they may use anything and nothing uses them
    /// outside `[dev-dependencies]`.
    Tooling,
}

fn kind_of(root: &Path, manifest: &Path) -> Kind {
    let rel = manifest.strip_prefix(root).unwrap();
    match rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap()
    {
        "crates" => Kind::Library,
        "plugins" => Kind::Plugin,
        "runtime" => Kind::Runtime,
        _ => Kind::Tooling,
    }
}

struct Package {
    name: String,
    kind: Kind,
    /// Normal (not dev, not build) dependencies on workspace members.
    deps: Vec<String>,
    /// The directory of the library target's root file, or the binary's.
    src: PathBuf,
    /// The root file of the crate whose modules are checked.
    root_file: PathBuf,
}

fn workspace() -> (PathBuf, Vec<Package>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = PathBuf::from(meta["workspace_root"].as_str().unwrap());
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let packages = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
            let targets = p["targets"].as_array().unwrap();
            let target = targets
                .iter()
                .find(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "lib"))
                .or_else(|| {
                    targets
                        .iter()
                        .find(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                })
                .unwrap();
            let root_file = PathBuf::from(target["src_path"].as_str().unwrap());
            Package {
                name: p["name"].as_str().unwrap().to_owned(),
                kind: kind_of(&root, &manifest),
                deps: p["dependencies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["kind"].is_null())
                    .map(|d| d["name"].as_str().unwrap().to_owned())
                    .filter(|d| members.contains(d))
                    .collect(),
                src: root_file.parent().unwrap().to_owned(),
                root_file,
            }
        })
        .collect();
    (root, packages)
}

#[test]
fn dependencies_point_one_way() {
    let (_, packages) = workspace();
    let kind: BTreeMap<&str, Kind> = packages.iter().map(|p| (p.name.as_str(), p.kind)).collect();
    let mut wrong = Vec::new();
    for p in &packages {
        for d in &p.deps {
            let allowed = match (p.kind, kind[d.as_str()]) {
                (_, Kind::Tooling) => false,
                (Kind::Library, Kind::Library) => true,
                (Kind::Library, _) => false,
                (Kind::Plugin | Kind::Runtime, Kind::Library) => true,
                (Kind::Plugin | Kind::Runtime, _) => false,
                (Kind::Tooling, _) => true,
            };
            if !allowed {
                wrong.push(format!(
                    "{} ({:?}) -> {d} ({:?})",
                    p.name,
                    p.kind,
                    kind[d.as_str()]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the architecture:\n{}",
        wrong.join("\n")
    );
}

/// `a/b.rs`, `a/b/mod.rs` → `a::b`; the crate root → ``.
fn module_of(src: &Path, file: &Path, root_file: &Path) -> Option<String> {
    if file == root_file {
        return Some(String::new());
    }
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_str().unwrap().trim_end_matches(".rs").to_owned())
        .collect();
    // Other crate roots that share the folder (src/main.rs beside src/lib.rs, src/bin/*).
    if parts.first().is_some_and(|p| p == "bin") || (parts == ["main"] || parts == ["lib"]) {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts.join("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code without comments, strings and char literals (their text could look like paths).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A raw string r"…" or r#"…"#.
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let mut hashes = 0;
                let mut j = i + 1;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                j += 1;
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = j + close.len();
                out.push_str("\"\"");
            }
            // A char literal ('a', '\n', '\''), not a lifetime ('a without a closing quote).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += 1;
                if b.get(i) == Some(&b'\\') {
                    i += 1;
                }
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The paths of a use tree starting at `i` (after `crate::`): `a::b`, `{a, b::{c, d}}`.
fn use_tree(s: &[u8], i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let i = skip_ws(s, i);
    if s.get(i) == Some(&b'{') {
        let mut j = i + 1;
        loop {
            j = skip_ws(s, j);
            match s.get(j) {
                Some(b'}') | None => return j + 1,
                Some(b',') => j += 1,
                _ => j = use_tree(s, j, prefix, out),
            }
        }
    }
    let (ident, mut j) = ident_at(s, i);
    if ident.is_empty() {
        return j + 1;
    }
    let mut path = prefix.to_vec();
    path.push(ident);
    if s[j..].starts_with(b"::") {
        j += 2;
        return use_tree(s, j, &path, out);
    }
    out.push(path);
    j
}

/// `code` without its `pub use …;` items.
fn strip_reexports(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("pub use ") {
        let boundary = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e + 1);
        if boundary {
            out.push_str(&rest[..at]);
        } else {
            out.push_str(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The child modules a file declares in files of their own (`mod name;`, not inline).
fn child_modules(code: &str) -> Vec<String> {
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("mod ") {
        let i = from + at;
        from = i + 4;
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
        if !boundary {
            continue;
        }
        let (name, j) = ident_at(s, skip_ws(s, i + 4));
        if !name.is_empty() && s.get(skip_ws(s, j)) == Some(&b';') {
            out.push(name);
        }
    }
    out
}

/// Every `crate::…`, `super::…` and `self::…` path of `code`, and every path that starts with
/// a child module the file declares (`mod v1;` … `v1::Layout`), as absolute module paths.
fn referenced_paths(code: &str, module: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let here: Vec<String> = module
        .split("::")
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let children = child_modules(code);
    // A parent re-exporting its children's items (`pub use child::Item;`) is a facade, not a
    // dependency of the parent's own code: those lines do not count as edges.
    let code = strip_reexports(code);
    let s = code.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
        // A path segment after `::` is not the start of a path.
        let path_start = boundary && !(i >= 2 && &s[i - 2..i] == b"::");
        if boundary && s[i..].starts_with(b"crate::") {
            i = use_tree(s, i + 7, &[], &mut out);
        } else if boundary && s[i..].starts_with(b"self::") {
            i = use_tree(s, i + 6, &here, &mut out);
        } else if path_start
            && children
                .iter()
                .any(|c| s[i..].starts_with(format!("{c}::").as_bytes()))
        {
            i = use_tree(s, i, &here, &mut out);
        } else if boundary && s[i..].starts_with(b"super::") {
            let mut base = here.clone();
            let mut j = i;
            while s[j..].starts_with(b"super::") {
                base.pop();
                j += 7;
            }
            i = use_tree(s, j, &base, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// The file (module) a path leads to: the deepest existing module, following a re-export of
/// a child's item in the module it stops at.
fn resolve(path: &[String], modules: &BTreeMap<String, String>) -> String {
    let mut best = String::new();
    let mut depth = 0;
    for n in 1..=path.len() {
        let candidate = path[..n].join("::");
        if modules.contains_key(&candidate) {
            best = candidate;
            depth = n;
        }
    }
    if let (Some(item), Some(code)) = (path.get(depth), modules.get(&best)) {
        for child in modules.keys() {
            let Some(name) = child
                .strip_prefix(&best)
                .map(|c| c.trim_start_matches("::"))
                .filter(|c| !c.is_empty() && !c.contains("::"))
            else {
                continue;
            };
            let reexports = referenced_paths_of_pub_use(code);
            if reexports
                .iter()
                .any(|p| p.first().map(String::as_str) == Some(name) && p.last() == Some(item))
            {
                return child.clone();
            }
        }
    }
    best
}

/// `pub use child::{A, b::C}` of a module: the re-exported paths, relative to it.
fn referenced_paths_of_pub_use(code: &str) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = code[i..].find("pub use ") {
        let j = i + at + "pub use ".len();
        let end = use_tree(s, j, &[], &mut out);
        i = end.min(s.len());
    }
    out
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on_stack.insert(v);
        for w in st.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on_stack.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = st.stack.pop().unwrap();
                st.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                st.out.push(scc);
            }
        }
    }
    let mut st = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v);
        }
    }
    st.out
}

fn module_graph(p: &Package) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&p.src, &mut files);
    let modules: BTreeMap<String, String> = files
        .iter()
        .filter_map(|f| {
            let m = module_of(&p.src, f, &p.root_file)?;
            Some((m, code_only(&std::fs::read_to_string(f).unwrap())))
        })
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for path in referenced_paths(code, module) {
            let target = resolve(&path, &modules);
            // A module's own items, and the crate root (which only declares modules and
            // re-exports), are no dependency.
            if &target != module && !target.is_empty() {
                edges.insert(target);
            }
        }
    }
    graph
}

#[test]
fn no_module_imports_in_a_circle() {
    let (_, packages) = workspace();
    let mut found = Vec::new();
    for p in packages.iter().filter(|p| p.kind != Kind::Tooling) {
        for circle in circles(&module_graph(p)) {
            found.push(format!("{}: {}", p.name, circle.join(" <-> ")));
        }
    }
    assert!(
        found.is_empty(),
        "modules that import each other in a circle:\n{}",
        found.join("\n")
    );
}

/// docs/architecture.dot, the source of docs/architecture.svg and .png: the workspace's
/// libraries, plugins and runtime with their dependency arrows, as cargo sees them.
fn architecture_dot(packages: &[Package]) -> String {
    let mut out = String::from(
        "// Generated from `cargo metadata` by tests/tests/architecture.rs; rendered by\n\
         // scripts/architecture.sh. Do not edit: run the script.\n\
         digraph berth {\n  rankdir=TB; concentrate=true; nodesep=0.15; ranksep=0.9;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n  edge [color=\"#555555\"];\n",
    );
    let clusters = [
        (
            Kind::Runtime,
            "runtime",
            "the berth runtime (runtime/)",
            "#fde2c8",
        ),
        (
            Kind::Plugin,
            "plugins",
            "CNI plugins (plugins/<type>)",
            "#d8ecd4",
        ),
        (Kind::Library, "libraries", "libraries (crates/)", "#d6e4f5"),
    ];
    for (kind, id, label, color) in clusters {
        out.push_str(&format!(
            "  subgraph cluster_{id} {{\n    label=\"{label}\"; color=\"#999999\"; fontname=\"Helvetica\";\n"
        ));
        let mut names: Vec<&str> = packages
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.name.as_str())
            .collect();
        names.sort();
        for name in names {
            out.push_str(&format!("    \"{name}\" [fillcolor=\"{color}\"];\n"));
        }
        out.push_str("  }\n");
    }
    let mut edges: Vec<(String, String)> = packages
        .iter()
        .filter(|p| p.kind != Kind::Tooling)
        .flat_map(|p| p.deps.iter().map(|d| (p.name.clone(), d.clone())))
        .collect();
    edges.sort();
    for (from, to) in edges {
        out.push_str(&format!("  \"{from}\" -> \"{to}\";\n"));
    }
    out.push_str("}\n");
    out
}

#[test]
fn the_picture_shows_the_crates_as_they_are() {
    let (root, packages) = workspace();
    let expected = architecture_dot(&packages);
    let path = root.join("docs/architecture.dot");
    if std::env::var_os("BERTH_WRITE_ARCHITECTURE").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == expected,
        "docs/architecture.dot does not show the crates as they are: run ./scripts/architecture.sh"
    );
}

#[test]
fn the_checker_sees_circles_and_re_exports() {
    let code = code_only(
        "use crate::{a::X, b::{c, d::E}};\n// crate::ignored\nlet s = \"crate::no\";\nsuper::f::g();",
    );
    let paths = referenced_paths(&code, "m::n");
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["a::X", "b::c", "b::d::E", "m::f::g"]);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(circles(&graph), [vec!["a", "b", "c"]]);
    let modules: BTreeMap<String, String> = [
        (
            "net".to_owned(),
            code_only("pub use hosts::Hosts;\nmod hosts;"),
        ),
        ("net::hosts".to_owned(), String::new()),
    ]
    .into();
    // A parent using its child by bare path or through `self::` depends on it.
    let code =
        code_only("mod v1;\nmod v2;\nuse self::v2::X;\nfn f() { v1::Layout::new(); a::v1::no(); }");
    let shown: Vec<String> = referenced_paths(&code, "cgroups")
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(shown, ["cgroups::v2::X", "cgroups::v1::Layout::new"]);
    assert_eq!(
        resolve(&["net".into(), "Hosts".into()], &modules),
        "net::hosts"
    );
    assert_eq!(resolve(&["net".into(), "Other".into()], &modules), "net");
}
