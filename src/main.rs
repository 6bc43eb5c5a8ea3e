//! The `certd` binary: parse the command line, set up logging and the crypto provider, run the command
//! on a tokio runtime, exit with its code. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = certd::cli::Cli::parse();
    // `[log] format` is needed before anything logs; an unusable file means the default here, and the
    // command itself then says what is wrong with it.
    let settings = certd::config::log_settings(&cli.config);
    // Flushes the log queue when main returns.
    let _logging = certd::logging::init_with(settings.format);
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
            return ExitCode::from(certd::exit::EXIT_UNUSABLE);
        }
    };
    ExitCode::from(runtime.block_on(certd::commands::run(cli)))
}
