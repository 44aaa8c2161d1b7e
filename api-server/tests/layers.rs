//! The crate's layers, checked on the source: imports run one way, from routes down to the base,
//! and no module imports itself back through others (no circle).
//!
//! | layer | modules |
//! |---|---|
//! | app | `testing` (and the crate root, `lib.rs`: `app`, `serve`) |
//! | routes | the resources' handlers and routers |
//! | domain | access, audit, authentication, HTTP middleware, recorded restores, retention |
//! | state | [`caduceus_api::state::AppState`] (holds the store's handles) |
//! | store | SQL, the grouped lookups and writes, the audit writer, the rate limiter's buckets |
//! | base | configuration, crypto, errors (FHIR OperationOutcomes too), metrics, the permission matrix, pagination, request metadata |
//!
//! A module may import its own layer (without a circle) and the layers below it. Every source
//! file must belong to a layer: a new module is placed in the table below. Only code before a
//! file's `#[cfg(test)]` counts (none of a file of tests marked `#![cfg(test)]`); comments do not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the top; a module is the longest entry that is a prefix of a file's module path.
const LAYERS: &[(&str, &[&str])] = &[
    ("app", &["", "testing"]),
    (
        "routes",
        &[
            "appointments",
            "audit::routes",
            "auth::routes",
            "fhir",
            "health",
            "openapi",
            "patients",
            "prescriptions",
            "rotate",
            "users",
        ],
    ),
    (
        "domain",
        &[
            "access",
            "audit",
            "auth",
            "middleware",
            "restores",
            "retention",
        ],
    ),
    ("state", &["state"]),
    ("store", &["batch", "ratelimit", "store"]),
    (
        "base",
        &[
            "config",
            "crypto",
            "error",
            "fhir::outcome",
            "metrics",
            "pagination",
            "rbac",
            "request",
            "tls",
        ],
    ),
];

/// The module (an entry of [`LAYERS`]) that `path` (segments) belongs to, and its depth
/// (0 = the top layer).
fn module_of(path: &[&str]) -> Option<(String, usize)> {
    let mut best: Option<(String, usize, usize)> = None;
    for (depth, (_, modules)) in LAYERS.iter().enumerate() {
        for m in modules.iter() {
            let segs: Vec<&str> = if m.is_empty() {
                Vec::new()
            } else {
                m.split("::").collect()
            };
            if path.len() >= segs.len()
                && path[..segs.len()] == segs[..]
                && best.as_ref().is_none_or(|b| segs.len() > b.2)
            {
                best = Some((m.to_string(), depth, segs.len()));
            }
        }
    }
    best.map(|(m, d, _)| (m, d))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("read src");
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module path of a source file: `src/auth/routes.rs` → `auth::routes`, `src/store/mod.rs` →
/// `store`, `src/lib.rs` → the root (empty).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
        segs.pop();
    }
    segs
}

/// The paths a file's code (before `#[cfg(test)]`, comments left out) names with `crate::` or
/// `super::`, resolved to absolute module paths (`super` inside an inline `mod x { ... }` is the
/// file's own module).
fn imports(text: &str, own: &[String]) -> Vec<Vec<String>> {
    // `super` of module `a::b` (`a/b.rs` or `a/b/mod.rs`) is `a`
    let parent = own[..own.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut inline_mods: Vec<usize> = Vec::new(); // brace depth inside each open inline module
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("#[cfg(test)]") || line.starts_with("#![cfg(test)]") {
            break;
        }
        if line.starts_with("//") {
            continue;
        }
        let sup = if inline_mods.is_empty() {
            parent.clone()
        } else {
            own.to_vec()
        };
        for (prefix, base) in [("crate::", Vec::new()), ("super::", sup)] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let preceded = rest[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                rest = &rest[at + prefix.len()..];
                if preceded {
                    continue;
                }
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut full = base.clone();
                full.extend(
                    path.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
                out.push(full);
            }
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let opens_mod = matches!(
            words.as_slice(),
            ["mod", _, "{", ..] | ["pub", "mod", _, "{", ..] | ["pub(crate)", "mod", _, "{", ..]
        );
        let opened = line.matches('{').count();
        let closed = line.matches('}').count();
        if opens_mod {
            inline_mods.push(depth + 1);
        }
        depth = (depth + opened).saturating_sub(closed);
        while inline_mods.last().is_some_and(|d| depth < *d) {
            inline_mods.pop();
        }
    }
    out
}

/// Edges between modules: (from, to) → an example (file and imported path).
fn module_graph() -> (BTreeMap<(String, String), String>, Vec<String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges = BTreeMap::new();
    let mut unplaced = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "main.rs") {
            continue; // the binary is its own crate
        }
        let own = module_path(&src, &file);
        let own_refs: Vec<&str> = own.iter().map(String::as_str).collect();
        // only `lib.rs` belongs to the root; any other file must match an entry of its own
        let placed = module_of(&own_refs).filter(|(m, _)| !m.is_empty() || own.is_empty());
        let Some((from, _)) = placed else {
            unplaced.push(own.join("::"));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for path in imports(&text, &own) {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some((to, _)) = module_of(&refs) {
                if to != from {
                    let rel = file.strip_prefix(&src).expect("under src").display();
                    edges
                        .entry((from.clone(), to))
                        .or_insert_with(|| format!("{rel}: {}", path.join("::")));
                }
            }
        }
    }
    (edges, unplaced)
}

fn depth(module: &str) -> usize {
    let segs: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    module_of(&segs).expect("placed").1
}

#[test]
fn every_source_file_has_a_layer() {
    let (_, unplaced) = module_graph();
    assert!(
        unplaced.is_empty(),
        "place these modules in a layer (tests/layers.rs): {unplaced:?}"
    );
}

#[test]
fn no_layer_imports_a_higher_one() {
    let (edges, _) = module_graph();
    let upward: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| depth(to) < depth(from))
        .map(|((from, to), at)| {
            format!(
                "{from} ({}) imports {to} ({}) at {at}",
                LAYERS[depth(from)].0,
                LAYERS[depth(to)].0
            )
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_module_imports_itself_back() {
    let (edges, _) = module_graph();
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from.as_str()).or_default().insert(to.as_str());
    }
    // depth-first search for a back edge; the stack is the circle
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node);
            return Some(circle);
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for n in next.get(node).into_iter().flatten() {
            if let Some(c) = visit(n, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in next.keys() {
        let mut stack = Vec::new();
        if let Some(circle) = visit(node, &next, &mut stack, &mut done) {
            let at: Vec<String> = circle
                .windows(2)
                .map(|w| edges[&(w[0].to_string(), w[1].to_string())].clone())
                .collect();
            panic!("import circle {}:\n{}", circle.join(" -> "), at.join("\n"));
        }
    }
}

#[test]
fn the_check_sees_an_import_against_the_layers() {
    let own = vec!["config".to_string()];
    let found = imports(
        "use crate::crypto::KeyRing;\n// crate::audit in a comment\nuse crate::audit::AuditEvent;\n\
         #[cfg(test)]\nuse crate::testing::TestApp;\n",
        &own,
    );
    assert_eq!(
        found,
        vec![
            vec!["crypto".to_string(), "KeyRing".into()],
            vec!["audit".to_string(), "AuditEvent".into()],
        ]
    );
    assert!(depth("audit") < depth("config"), "audit is above config");
    let child = vec!["auth".to_string(), "routes".to_string()];
    let sup = imports("use super::{tokens, AuthUser};", &child);
    assert_eq!(sup, vec![vec!["auth".to_string()]]);
    // inside an inline module, `super` is the file's own module
    let rbac = vec!["rbac".to_string()];
    let inline = imports(
        "pub mod perm {\n    use super::Permission;\n}\nuse super::x;\n",
        &rbac,
    );
    assert_eq!(
        inline,
        vec![
            vec!["rbac".to_string(), "Permission".into()],
            vec!["x".to_string()]
        ]
    );
}
