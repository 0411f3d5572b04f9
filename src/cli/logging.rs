//! What the process says on stderr besides a command's words: log lines (text or JSON,
//! above the progress bars), a command line clap refused, and a panic, which is a bug
//! said in one line.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Cli, LogFormat, say};

/// Starts the log subscriber: `--log-level` (or RUST_LOG) and `--log-format`.
pub fn init(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let lvl = &cli.log_level;
        let mut spec = if lvl.contains('=') {
            lvl.clone()
        } else {
            format!("warn,deltalake_core=off,buoyant_kernel=off,contacts_etl={lvl}")
        };
        // Text logs leave each account's result, a failure included, to the summary
        // table, unless asked: said once, not as a log line and again in the table.
        if cli.log_format == LogFormat::Text && !matches!(lvl.as_str(), "debug" | "trace") {
            spec.push_str(&format!(",{}=off", contacts_etl::sync::ACCOUNT_TARGET));
        }
        tracing_subscriber::EnvFilter::new(spec)
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        // Colour only for a person who wants it: redirected stderr, or NO_COLOR set
        // (https://no-color.org), gets plain text.
        .with_ansi(std::io::stderr().is_terminal() && !contacts_etl::human::no_color());
    match cli.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_target(false).init(),
    }
}

/// Stderr for log lines: each is written with the progress bars cleared, so that it lands
/// above them and no half-drawn bar stays behind it.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        contacts_etl::sync::suspend_progress(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A command line clap could not read (or `--help`/`--version`): printed by clap, except
/// that with `--log-format json` an error is one JSON line like every other line on stderr.
pub fn usage_error(e: clap::Error) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    if !json || !e.use_stderr() {
        let _ = e.print();
        return ExitCode::from(e.exit_code() as u8);
    }
    let text = e.render().to_string();
    let line = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": "ERROR",
        "fields": { "message": "command line refused", "error": text.trim() },
    });
    eprintln!("{line}");
    ExitCode::from(2)
}

/// The exit code of a process that panicked, as Rust's own.
pub const PANIC_EXIT: u8 = 101;

/// Set by the panic hook: the process ends with [`PANIC_EXIT`].
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Whether a panic happened in this process (on any thread or task).
pub fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

/// A panic is a bug: one line saying so (what, where, the version, where to report it),
/// not a screen of executor backtrace; `RUST_BACKTRACE=1` brings the trace back. Only
/// the first panic is said (a panic in a task can bring others down with it); `main`
/// then exits [`PANIC_EXIT`].
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
        if PANICKED.swap(true, Ordering::SeqCst) {
            return;
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say(
            tracing::Level::ERROR,
            &format!(
                "internal error{at}: {}. This is a bug in contacts-etl {}: please report it on the project's issue tracker with this line and the command that ran (RUST_BACKTRACE=1 shows the trace)",
                contacts_etl::secret::printable(&what),
                env!("CARGO_PKG_VERSION"),
            ),
        );
    }));
}
