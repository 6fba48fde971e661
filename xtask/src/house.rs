//! `cargo xtask house`: the house rules that code review kept losing track of, checked by a
//! program: no source file under `crates/*/src` is longer than [`MAX_LINES`] lines, and inside
//! each crate the modules import one way — no module reaches, through `use crate::…`,
//! `super::…`, `self::…` or a `mod` declaration, a module that reaches back to it. The check
//! prints each crate's modules bottom-up (the order ARCHITECTURE.md states) and fails on the
//! first circle, naming its edges. `cargo xtask test` runs it before the tests.
//!
//! The graph is drawn between *files*: `a/mod.rs` is module `a`, `a/b.rs` is `a::b`, `lib.rs`
//! and `main.rs` are the crate root. A path resolves to the longest prefix that names a file
//! module, so `crate::codec::EcsqCodec` is an edge to `codec` and `crate::Foo` (a root item or
//! re-export) is an edge to the root, which declares every module and therefore closes a
//! circle: modules import what they use from the module that defines it. Inline
//! `#[cfg(test)] mod … { … }` blocks are not part of the graph (a test may look anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The longest a source file under `crates/*/src` may be.
pub const MAX_LINES: usize = 700;

/// Checks every crate of the workspace at `root` and prints the module order of each.
pub fn run(root: &Path) -> Result<()> {
    let mut failures = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .context("reading crates/")?
        .filter_map(|e| e.ok().map(|e| e.path().join("src")))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    for src in &crates {
        let name = src
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let files = rust_files(src)?;
        let mut modules = BTreeMap::new();
        for f in &files {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let lines = text.lines().count();
            if lines > MAX_LINES {
                failures.push(format!(
                    "{}: {lines} lines (at most {MAX_LINES})",
                    f.strip_prefix(root).unwrap_or(f).display()
                ));
            }
            modules.insert(module_of(src, f), text);
        }
        match order(&modules) {
            Ok(order) => println!("house: {name}: {}", order.join(" < ")),
            Err(circle) => failures.push(format!("{name}: import circle {circle}")),
        }
    }
    if !failures.is_empty() {
        bail!("house rules broken:\n  {}", failures.join("\n  "));
    }
    println!(
        "house: {} crates, every file at most {MAX_LINES} lines, no import circle",
        crates.len()
    );
    Ok(())
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(rust_files(&p)?);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The module path of a file under `src` (`""` for the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") || !parts.is_empty() && stem != "mod" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The modules (path → source) bottom-up, or the edges of a circle.
fn order(modules: &BTreeMap<String, String>) -> std::result::Result<Vec<String>, String> {
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in modules {
        let out = edges.entry(m.as_str()).or_default();
        for target in references(m, text, &names) {
            if target != *m {
                out.insert(target);
            }
        }
    }
    // Depth-first topological sort; a grey node met again closes a circle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    let mut mark: BTreeMap<&str, Mark> = names.iter().map(|n| (*n, Mark::White)).collect();
    let mut sorted = Vec::new();
    fn visit<'a>(
        n: &'a str,
        edges: &'a BTreeMap<&'a str, BTreeSet<String>>,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        sorted: &mut Vec<String>,
    ) -> std::result::Result<(), String> {
        match mark[n] {
            Mark::Black => return Ok(()),
            Mark::Grey => {
                let at = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut circle: Vec<String> = stack[at..].iter().map(|s| show(s)).collect();
                circle.push(show(n));
                return Err(circle.join(" -> "));
            }
            Mark::White => {}
        }
        mark.insert(n, Mark::Grey);
        stack.push(n);
        for t in &edges[n] {
            visit(t.as_str(), edges, mark, stack, sorted)?;
        }
        stack.pop();
        mark.insert(n, Mark::Black);
        sorted.push(show(n));
        Ok(())
    }
    for n in &names {
        visit(n, &edges, &mut mark, &mut Vec::new(), &mut sorted)?;
    }
    Ok(sorted)
}

fn show(module: &str) -> String {
    if module.is_empty() {
        "(root)".into()
    } else {
        module.into()
    }
}

/// The file modules `text` (module `m`) refers to: `mod` declarations (children) and every
/// `crate::`/`super::`/`self::` path, use-trees expanded.
fn references(m: &str, text: &str, names: &BTreeSet<&str>) -> Vec<String> {
    let code = strip(text);
    let here: Vec<&str> = if m.is_empty() {
        Vec::new()
    } else {
        m.split("::").collect()
    };
    let mut out = Vec::new();
    let toks = tokens(&code);
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].as_str();
        // `mod name;` declares a child file module.
        if t == "mod" && toks.get(i + 2).is_some_and(|s| s == ";") {
            let mut p: Vec<&str> = here.clone();
            p.push(&toks[i + 1]);
            out.push(p.join("::"));
            i += 3;
            continue;
        }
        let starts = matches!(t, "crate" | "super" | "self")
            && toks.get(i + 1).is_some_and(|s| s == "::")
            && (i == 0 || toks[i - 1] != "$" && toks[i - 1] != "::");
        if !starts {
            i += 1;
            continue;
        }
        let (paths, next) = use_tree(&toks, i);
        for p in paths {
            let abs = absolute(&here, &p);
            out.push(resolve(&abs, names));
        }
        i = next.max(i + 1);
    }
    out
}

/// Absolute segments of a path that starts with `crate`, `super` or `self`, seen from `here`.
fn absolute(here: &[&str], path: &[String]) -> Vec<String> {
    let mut base: Vec<String> = here.iter().map(|s| s.to_string()).collect();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        _ => {
            while let Some(s) = rest.first().map(String::as_str) {
                match s {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    base
}

/// The longest prefix of `abs` that names a file module.
fn resolve(abs: &[String], names: &BTreeSet<&str>) -> String {
    for n in (0..=abs.len()).rev() {
        let p = abs[..n].join("::");
        if names.contains(p.as_str()) {
            return p;
        }
    }
    String::new()
}

/// Expands the path or use-tree starting at token `i` into its leaf paths; returns them and the
/// index after it.
fn use_tree(toks: &[String], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match toks.get(i).map(String::as_str) {
            Some("{") => {
                let mut out = Vec::new();
                i += 1;
                while i < toks.len() && toks[i] != "}" {
                    if toks[i] == "," {
                        i += 1;
                        continue;
                    }
                    let (inner, next) = use_tree(toks, i);
                    for p in inner {
                        let mut full = prefix.clone();
                        full.extend(p);
                        out.push(full);
                    }
                    i = next.max(i + 1);
                }
                return (out, i + 1);
            }
            Some(t) if is_ident(t) => {
                prefix.push(t.to_string());
                i += 1;
                if toks.get(i).is_some_and(|s| s == "::") {
                    i += 1;
                    continue;
                }
                // `as alias`
                if toks.get(i).is_some_and(|s| s == "as") {
                    i += 2;
                }
                return (vec![prefix], i);
            }
            Some("*") => return (vec![prefix], i + 1),
            _ => return (vec![prefix], i),
        }
    }
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_alphanumeric() || c == '_' {
            let s = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(b[s..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// `text` without comments, string and char literals, and inline `#[cfg(test)] mod … { … }`
/// blocks.
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&b, i) {
            // Raw string r"…" / r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            'raw: while j < b.len() {
                if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let close = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(j) => {
                    out.push_str("' '");
                    i = j + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    drop_test_modules(&out)
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// Removes `#[cfg(test)] mod name { … }` blocks.
fn drop_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        match (is_mod, trimmed.find(['{', ';'])) {
            (true, Some(open)) if trimmed.as_bytes()[open] == b'{' => {
                let body = &trimmed[open..];
                let mut depth = 0usize;
                let mut end = body.len();
                for (k, ch) in body.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &body[end..];
            }
            _ => {
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> std::result::Result<Vec<String>, String> {
        order(
            &files
                .iter()
                .map(|(m, t)| (m.to_string(), t.to_string()))
                .collect(),
        )
    }

    #[test]
    fn modules_importing_down_are_ordered() {
        let g = graph(&[
            ("", "mod a;\nmod b;\npub use b::{Thing, other::X};"),
            ("a", "//! uses crate::b in a comment\npub struct A;"),
            (
                "b",
                "use crate::{a::A, error};\nmod other;\nfn f() { let s = \"crate::b\"; }",
            ),
            (
                "b::other",
                "use super::super::a::A as Z; use crate::error::E;",
            ),
            ("error", "pub enum E {}"),
        ])
        .unwrap();
        let pos = |m: &str| g.iter().position(|x| x == m).unwrap();
        assert!(pos("a") < pos("b"));
        assert!(pos("error") < pos("b::other"));
        assert!(pos("b::other") < pos("b"));
        assert_eq!(g.last().unwrap(), "(root)");
    }

    #[test]
    fn a_circle_is_named() {
        let e = graph(&[
            ("", "mod a;\nmod b;"),
            ("a", "use crate::b::B;"),
            ("b", "fn f() -> crate::a::A { todo!() }"),
        ])
        .unwrap_err();
        assert!(
            e.contains("a -> b -> a") || e.contains("b -> a -> b"),
            "{e}"
        );
        // A child using its parent's own item, and a module using a root re-export.
        assert!(
            graph(&[
                ("", "mod a;"),
                ("a", "mod c;"),
                ("a::c", "use super::Item;")
            ])
            .is_err()
        );
        assert!(graph(&[("", "mod a;\npub use a::X;"), ("a", "use crate::X;")]).is_err());
    }

    #[test]
    fn test_modules_and_literals_do_not_count() {
        let g = graph(&[
            ("", "mod a;\nmod b;"),
            (
                "a",
                "fn f() -> char { '{' }\n#[cfg(test)]\nmod tests {\n use crate::b::*;\n}\n",
            ),
            ("b", "use crate::a::f; const S: &str = r#\"crate::a\"#;"),
        ]);
        assert!(g.is_ok(), "{g:?}");
    }

    #[test]
    fn file_paths_map_to_modules() {
        let src = Path::new("/x/src");
        assert_eq!(module_of(src, Path::new("/x/src/lib.rs")), "");
        assert_eq!(module_of(src, Path::new("/x/src/a.rs")), "a");
        assert_eq!(module_of(src, Path::new("/x/src/a/mod.rs")), "a");
        assert_eq!(module_of(src, Path::new("/x/src/a/b.rs")), "a::b");
        assert_eq!(module_of(src, Path::new("/x/src/a/lib.rs")), "a::lib");
    }
}
