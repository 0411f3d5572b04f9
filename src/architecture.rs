//! The shape of the crate, held by a test: the top-level modules depend on each other
//! in one direction only (DESIGN.md draws it), and nothing outside the providers' folders
//! names a provider but the registry, the configuration's list of provider names, the
//! emulator, the demo and the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and its layer: a module may use modules of lower layers only.
const LAYERS: &[(&str, u8)] = &[
    ("secret", 0),
    ("error", 1),
    ("arrow_util", 2),
    ("config", 2),
    ("http", 2),
    ("human", 2),
    ("xml", 2),
    ("model", 3),
    ("lake", 4),
    ("providers", 4),
    ("emulator", 4),
    ("sql", 5),
    ("sync", 6),
    ("plan", 7),
    ("state", 7),
    ("status", 8),
    ("demo", 8),
];

/// The text of a module's files without their `#[cfg(test)] mod tests` (tests may reach
/// anywhere: a provider's tests start the emulator).
fn module_text(src: &Path, module: &str) -> String {
    let mut files = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        files.push(single);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let name: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

#[test]
fn dependencies_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (m, l) in LAYERS {
        for used in uses(&module_text(&src, m)) {
            // The crate root re-exports the error module's Error and Result.
            let used = match used.as_str() {
                "Error" | "Result" => "error".to_string(),
                _ => used,
            };
            if used == *m {
                continue;
            }
            match layer.get(used.as_str()) {
                Some(u) if u < l => {}
                Some(u) => wrong.push(format!("{m} (layer {l}) uses {used} (layer {u})")),
                // Items re-exported at the crate root (Error, Result) and the crate's
                // lower-case paths that are not modules.
                None if matches!(used.as_str(), "schema" | "spill" | "verify") => {
                    wrong.push(format!("{m} uses crate::{used}; name the model's path"))
                }
                None => wrong.push(format!(
                    "{m} uses crate::{used}, which is not in the layer table"
                )),
            }
        }
    }
    // Every module of the crate is in the table.
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if !["lib", "main", "tune", "architecture"].contains(&name.as_str())
            && !layer.contains_key(name.as_str())
        {
            wrong.push(format!("src/{name} is not in the layer table"));
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the design:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_providers_name_a_provider() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (m, _) in LAYERS {
        // The emulator serves both APIs and the demo runs both.
        if ["providers", "emulator", "demo"].contains(m) {
            continue;
        }
        // Code only: documentation may show a pipeline entry.
        let text: String = module_text(&src, m)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        // Every provider of the registry, so a new one is covered without editing this.
        let mut names = vec![
            "GoogleSource".to_string(),
            "AurinkoSource".to_string(),
            "CardDavSource".to_string(),
            "Provider::".to_string(),
        ];
        for r in crate::providers::PROVIDERS {
            names.push(format!("providers::{}", r.name));
            names.push(format!("\"{}\"", r.name));
        }
        for name in &names {
            if text.contains(name.as_str()) {
                wrong.push(format!("{m} names {name}"));
            }
        }
    }
    // Inside `providers`, only the registry (`PROVIDERS`, one line or, as rustfmt
    // wraps it, one item a line up to its `];`) names a provider's folder.
    let registry = std::fs::read_to_string(src.join("providers/mod.rs")).unwrap();
    let registry = registry.split("#[cfg(test)]").next().unwrap();
    let mut in_registry = false;
    for line in registry.lines() {
        in_registry |= line.starts_with("pub const PROVIDERS");
        let names = crate::providers::PROVIDERS
            .iter()
            .any(|r| line.contains(&format!("{}::", r.name)));
        if names && !in_registry {
            wrong.push(format!(
                "providers/mod.rs outside the registry line: {line}"
            ));
        }
        in_registry &= !line.trim_end().ends_with("];");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
