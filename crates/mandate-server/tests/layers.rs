//! The server crate's files form layers: no file reaches, through the
//! others, back to itself. A cycle is how a domain module ends up building
//! HTTP statuses or calling a route; this test names the cycle when one
//! appears. (A module's `mod` declarations are not dependencies; its `use`
//! and paths are.)

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src`, by path (`routes::decide`; `` for the root), with
/// its code: comments and the unit tests at its end removed.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let name = relative
                .to_str()
                .unwrap()
                .trim_end_matches("/mod")
                .replace('/', "::");
            let name = if name == "lib" { String::new() } else { name };
            found.insert(name, code(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    found
}

/// `text` without `//` comments and without a trailing `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            // `//` inside a string (a URL, say) is not a comment, but no
            // module path follows one either.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths `code` names after `prefix` (`crate::` or `super::`),
/// expanding `{a, b::c}` groups: `routes::tasks`, `state::AppState`, ...
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find(['}', ';']).unwrap_or(group.len());
            for item in group[..end].split([',', '{', ' ', '\n']) {
                let item = item.trim().trim_end_matches("::");
                if !item.is_empty() && item != "self" {
                    paths.push(item.to_owned());
                }
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            paths.push(rest[..end].trim_end_matches(':').to_owned());
        }
    }
    paths
}

/// The longest module that `path` names, if any.
fn module_of<'a>(path: &str, modules: &'a BTreeMap<String, String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get_key_value(&parts.get(..n)?.join("::")))
        .map(|(name, _)| name)
}

/// Which modules each module uses.
fn dependencies(modules: &BTreeMap<String, String>) -> BTreeMap<&String, BTreeSet<&String>> {
    modules
        .iter()
        .map(|(name, code)| {
            let parent = name.rsplit_once("::").map_or("", |(parent, _)| parent);
            let from_super = paths_after(code, "super::").into_iter().map(|p| {
                if parent.is_empty() {
                    p
                } else {
                    format!("{parent}::{p}")
                }
            });
            let used = paths_after(code, "crate::")
                .into_iter()
                .chain(from_super)
                .filter_map(|p| module_of(&p, modules))
                .filter(|m| *m != name && !m.is_empty())
                .collect();
            (name, used)
        })
        .collect()
}

/// A cycle through `from`, as the modules on it, if there is one.
fn cycle_from<'a>(
    from: &'a String,
    graph: &BTreeMap<&'a String, BTreeSet<&'a String>>,
) -> Option<Vec<&'a String>> {
    // Depth-first, keeping the path to each module reached.
    let mut stack = vec![(from, vec![from])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(at).into_iter().flatten() {
            if *next == from {
                return Some(path);
            }
            if seen.insert(*next) {
                let mut longer = path.clone();
                longer.push(next);
                stack.push((next, longer));
            }
        }
    }
    None
}

#[test]
fn no_file_of_the_server_reaches_back_to_itself() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let graph = dependencies(&modules);
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(m, &graph))
        .map(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|m| m.as_str()).collect();
            format!("{} -> {}", names.join(" -> "), names.first().unwrap_or(&""))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "files in a cycle:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_check_sees_a_cycle() {
    // Two modules naming each other, written as this crate writes uses.
    let modules: BTreeMap<String, String> = [
        (String::new(), String::new()),
        (
            "state".to_owned(),
            "use crate::approvals::Approvals;".to_owned(),
        ),
        (
            "approvals".to_owned(),
            "use crate::{error::ApiError, state::AppState};".to_owned(),
        ),
        ("error".to_owned(), String::new()),
    ]
    .into();
    let graph = dependencies(&modules);
    let state = "state".to_owned();
    let error = "error".to_owned();
    assert!(cycle_from(&state, &graph).is_some());
    assert!(cycle_from(&error, &graph).is_none());
}
