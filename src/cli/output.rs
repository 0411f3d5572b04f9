//! Where a command's words go: its output on stdout (a reader that went away is not an
//! error of ours), its last word on stderr (text, or a JSON event in JSON logs), and
//! the width its tables fit.

use std::sync::atomic::{AtomicBool, Ordering};

use contacts_etl::error::{Context as _, Kind};
use contacts_etl::{Error, Result};

/// Whether stderr carries JSON lines only (`--log-format json`).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Says that stderr carries JSON lines only from now on.
pub fn set_json_logs(json: bool) {
    JSON_LOGS.store(json, Ordering::Relaxed);
}

/// Whether stderr carries JSON lines only.
pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// A last word on stderr: a line of text, or a JSON event in JSON logs.
pub fn say(level: tracing::Level, text: &str) {
    if json_logs() {
        if level == tracing::Level::ERROR {
            tracing::error!(error = text, "command failed");
        } else {
            tracing::info!("{text}");
        }
    } else if level == tracing::Level::ERROR {
        eprintln!("error: {text}");
    } else {
        eprintln!("{text}");
    }
}

/// Writes to stdout. A reader that went away (`| head`) is not an error of ours: the
/// broken pipe comes back as an I/O error that `main` ends on quietly.
pub fn out(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// For output that is not the last word (apply's exit code still tells whether rows
/// failed): a reader that went away is ignored.
pub fn keep_going_if_gone(e: Error) -> Result<()> {
    if is_broken_pipe(&e) { Ok(()) } else { Err(e) }
}

/// Whether `e` is a write to a closed pipe, found by type through its chain of causes.
pub fn is_broken_pipe(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Writes a local output file, creating its folder; `flag` names the option that named
/// it (`--output`), for the error.
pub fn write_local(flag: &str, path: &str, bytes: &[u8]) -> Result<()> {
    let p = std::path::Path::new(path);
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(Kind::Config, || {
            format!("{flag} {path}: cannot create {}", dir.display())
        })?;
    }
    std::fs::write(p, bytes).with_context(Kind::Config, || format!("{flag} {path}"))
}

/// The width the tables of `status` and `state show` fit: the terminal's, or `COLUMNS`,
/// else the status table's default.
pub fn table_width() -> usize {
    contacts_etl::human::stdout_width().unwrap_or(contacts_etl::status::WIDTH)
}
