//! `meshtrust`: shared trust and cross-cluster discovery for a multi-cluster Istio mesh, with OpenBao as the
//! only source of truth.
#![forbid(unsafe_code)]
// Long functions hide their steps; split them (tests may `#[allow]` this).
#![deny(clippy::too_many_lines)]

mod args;
mod commands;
mod context;
mod error;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    // One TLS provider for kube, reqwest and rcgen, installed before anything opens a connection.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    // The agent is a daemon: by default it says what it is doing (info); the one-shot commands stay quiet.
    let verbose = match cli.command {
        Command::Agent(_) => cli.verbose.max(1),
        _ => cli.verbose,
    };
    init_logging(verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Plan(args) => commands::plan::run(&cli.global, args).await,
            Command::Apply(args) => commands::apply::run(&cli.global, args).await,
            Command::Verify(args) => commands::verify::run(&cli.global, args).await,
            Command::Ca(args) => commands::ca::run(&cli.global, args).await,
            Command::Bao(args) => commands::bao::run(&cli.global, args),
            Command::Agent(args) => commands::agent::run(&cli.global, args).await,
            Command::Render(args) => commands::render::run(&cli.global, args).await,
            Command::Status(args) => commands::status::run(&cli.global, args).await,
            Command::Init(args) => commands::init::run(args),
            Command::Man(args) => commands::man::run(args),
            Command::Completions(args) => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(
                    args.shell,
                    &mut command,
                    "meshtrust",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Dependency log targets that could print answer bodies or headers, silenced whatever the filter says.
const QUIET_TARGETS: &[&str] = &["kube_client::client=off"];

fn init_logging(verbose: u8, format: args::LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info,meshtrust=info",
        _ => "debug",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("MESHTRUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // kube-client logs whole answer bodies at warn when they do not parse (a Secret list included) and
    // response headers at trace; meshtrust's own error says what failed. Off at every level, MESHTRUST_LOG too.
    for directive in QUIET_TARGETS {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        args::LogFormat::Json => builder.json().try_init(),
        args::LogFormat::Text => builder.try_init(),
    };
}
