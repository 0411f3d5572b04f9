//! The shape of the crate, held by tests: the top-level modules depend on each other in
//! one direction only (DESIGN.md draws it); nothing outside the providers' folders names
//! a provider but the registry, the emulator, the demo and the emulator command; the
//! command line (`main.rs`, `src/cli/`) reaches the providers only through the registry,
//! and each of its commands teaches itself with examples; DESIGN.md names every provider
//! of the registry.

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
        // The binary (main.rs, its tune.rs and cli/) sits above every module.
        if !["lib", "main", "tune", "architecture", "cli"].contains(&name.as_str())
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

/// The code of a file (documentation lines left out: they may show a pipeline entry),
/// without its `#[cfg(test)] mod tests`.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files of the command line: `main.rs` and `src/cli/`.
fn binary_files(src: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![src.join("main.rs")];
    for e in std::fs::read_dir(src.join("cli")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "rs") {
            files.push(e.path());
        }
    }
    files.sort();
    files
}

/// The command line is a layer over the library: it reaches a provider only through the
/// registry (`providers::load_pipeline`, never a provider's folder or type), and names
/// none in its code but where it configures the emulator, whose flags are the
/// emulator's own settings (`cli/emulator.rs`).
#[test]
fn the_command_line_reaches_providers_only_through_the_registry() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for f in binary_files(&src) {
        let text = code_of(&f);
        let name = f.strip_prefix(&src).unwrap().display().to_string();
        for r in crate::providers::PROVIDERS {
            for used in [format!("providers::{}", r.name), format!("\"{}\"", r.name)] {
                if text.contains(&used) {
                    wrong.push(format!("{name} names {used}"));
                }
            }
        }
        for t in [
            "GoogleSource",
            "AurinkoSource",
            "CardDavSource",
            "Provider::",
        ] {
            if text.contains(t) {
                wrong.push(format!("{name} names {t}"));
            }
        }
        if name != "cli/emulator.rs" {
            for p in ["Google", "Aurinko", "CardDAV"] {
                // Outside strings and doc text: an identifier naming a provider.
                let code: String = text.split('"').step_by(2).collect::<Vec<_>>().join(" ");
                if code.contains(p) {
                    wrong.push(format!("{name} names {p} in its code"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Each command is one file of `src/cli/` that teaches itself: an `Args` struct (or, for a
/// command without flags, a `run`) and the `EXAMPLES` its `--help` shows, which a test runs
/// (tests/integration/operator.rs). The files that are not commands are named here.
#[test]
fn every_command_file_has_its_args_and_examples() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let helpers = [
        "mod.rs",
        "output.rs",
        "logging.rs",
        "signals.rs",
        "debug.rs",
    ];
    let mut wrong = Vec::new();
    for f in binary_files(&src) {
        let file = f.file_name().unwrap().to_string_lossy().to_string();
        if f.parent() != Some(src.join("cli").as_path()) || helpers.contains(&file.as_str()) {
            continue;
        }
        let text = code_of(&f);
        if !text.contains("pub const EXAMPLES: &str") {
            wrong.push(format!("cli/{file} has no EXAMPLES for its --help"));
        }
        if !text.contains("derive(clap::Args)") && !text.contains("pub fn run(") {
            wrong.push(format!("cli/{file} has neither an Args struct nor a run"));
        }
    }
    // main.rs stays a starter: the commands are in cli/.
    let main = code_of(&src.join("main.rs"));
    if main.contains("#[derive(") || main.lines().count() > 120 {
        wrong.push("main.rs holds more than the process's start".into());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// DESIGN.md draws every provider of the registry (its folder under `providers/`).
#[test]
fn the_design_names_every_provider() {
    let design =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("DESIGN.md")).unwrap();
    for r in crate::providers::PROVIDERS {
        assert!(
            design.contains(&format!("{}/", r.name)),
            "DESIGN.md does not draw providers/{}/",
            r.name
        );
    }
}
