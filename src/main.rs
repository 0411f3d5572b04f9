//! The `contacts-etl` command line: a thin layer over the library. The commands live in
//! `cli/` (one file each, beside the process's logging and signals); this file starts
//! the process: the panic hook, logging, the runtime, and the command, stopped on SIGINT
//! or SIGTERM.

mod cli;
mod tune;

use std::process::ExitCode;

use cli::{Cli, Ctx, LogFormat, is_broken_pipe, logging, say, signals};

fn main() -> ExitCode {
    tune::tune_process();
    logging::install_panic_hook();
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => return logging::usage_error(e),
    };
    logging::init(&cli);
    let json = cli.log_format == LogFormat::Json;
    cli::output::set_json_logs(json);
    let ctx = Ctx {
        progress: !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        json,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stoppable = cli.command.stoppable();
    let outcome = rt.block_on(signals::run_until_stopped(cli.command.run(ctx), stoppable));
    let code: u8 = match outcome {
        // A bug was said in one line by the panic hook; what the panic left is not.
        _ if logging::panicked() => logging::PANIC_EXIT,
        Ok(code) => code,
        // The reader of stdout stopped reading (`… | head`): it has what it wanted.
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            say(tracing::Level::ERROR, &e.to_string());
            e.exit_code() as u8
        }
    };
    // Everything the command wrote has been awaited. The process ends here, without
    // winding the runtime down: a table reader's blocking task that an error left
    // behind would panic when its runtime goes ("executor has crashed") after the
    // error was already said.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(i32::from(code));
}
