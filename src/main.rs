//! The `certd` binary: parse the command line, set up logging and the crypto provider, run the command
//! on a tokio runtime, exit with its code. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

/// Log lines queued for the log thread at most; a full queue makes the next line wait. The queue is
/// allocated whole at start, so this bounds memory too (tracing-appender's default, 128,000 lines,
/// costs about 4 MiB of resident memory).
const LOG_QUEUE_LINES: usize = 8192;

fn main() -> ExitCode {
    let cli = certd::cli::Cli::parse();
    // Log lines (one per request with the access log) are written by a thread of their own, in
    // batches: the request path never waits for a write(2) to stderr. Nothing is dropped when the
    // queue is full (`lossy(false)`), and the guard flushes what is left when main returns.
    let (log_writer, _flush_on_exit) =
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("certd-log")
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .finish(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stderr(),
            ));
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,certd=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Every TLS config in certd uses aws-lc-rs; installing it as the process default also covers
    // libraries that ask rustls for the default provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("certd: cannot start the async runtime: {err}");
            return ExitCode::from(certd::commands::EXIT_UNUSABLE);
        }
    };
    ExitCode::from(runtime.block_on(certd::commands::run(cli)))
}
