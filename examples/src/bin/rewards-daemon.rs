//! `rewards-daemon`: the bundled rewards daemon.
//!
//! ```text
//! rewards-daemon --config examples/daemon.toml [--exit-when-done]
//! rewards-daemon sample --out examples/data
//! ```
//!
//! Exit status: 0 after a graceful stop (SIGTERM, SIGINT, or the end of a
//! finite input with `--exit-when-done`); 1 when the configuration is
//! invalid or the daemon cannot start; 2 when the input failed; 130 on a
//! second Ctrl-C during the graceful stop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use rewards_examples::daemon::config::Config;
use rewards_examples::daemon::dsl::DslCompiler;
use rewards_examples::daemon::{logging, sample, Daemon, StartError};

#[derive(Debug, Parser)]
#[command(
    name = "rewards-daemon",
    version,
    about = "The rewards engine's bundled daemon"
)]
struct Cli {
    /// The TOML configuration file (or set REWARDS_CONFIG).
    #[arg(long, short = 'c', env = "REWARDS_CONFIG")]
    config: Option<PathBuf>,
    /// With a finite input (file, stdin): stop once it is processed,
    /// after printing the summary. Without it the API keeps serving.
    #[arg(long)]
    exit_when_done: bool,
    /// Validate the configuration and compile the programs, then exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the example data (transactions.jsonl, members.jsonl).
    Sample {
        /// Output folder.
        #[arg(long, default_value = "examples/data")]
        out: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Transactions of the default (cash-back) program.
        #[arg(long, default_value_t = 2_400)]
        cashback: usize,
        /// Transactions of the airline program.
        #[arg(long, default_value_t = 600)]
        airline: usize,
        /// Transactions of the coffee program.
        #[arg(long, default_value_t = 400)]
        coffee: usize,
    },
}

fn load_config(cli: &Cli) -> Result<Config, StartError> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env()?;
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Sample {
        out,
        seed,
        cashback,
        airline,
        coffee,
    }) = &cli.command
    {
        let config = sample::SampleConfig {
            seed: *seed,
            cashback: *cashback,
            airline: *airline,
            coffee: *coffee,
            ..sample::SampleConfig::default()
        };
        return match sample::generate(&config).and_then(|s| {
            sample::write(&s, out).map_err(|e| e.to_string())?;
            Ok(s)
        }) {
            Ok(s) => {
                println!(
                    "wrote {} transactions and {} profiles to {}",
                    s.transactions.len(),
                    s.profiles.len(),
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rewards-daemon sample: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rewards-daemon: {e}");
            return ExitCode::from(1);
        }
    };
    logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rewards-daemon: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(config, cli.exit_when_done, cli.check))
}

async fn run(config: Config, exit_when_done: bool, check_only: bool) -> ExitCode {
    let compiler = Arc::new(DslCompiler::new());
    if check_only {
        return match rewards_examples::daemon::check(&config, compiler) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rewards-daemon: {e}");
                ExitCode::from(1)
            }
        };
    }
    // Listen before starting: a SIGTERM that arrives while the daemon
    // starts must stop it gracefully, not kill it.
    let signals = Signals::install();
    let daemon = match Daemon::start(config, compiler).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("rewards-daemon: {e}");
            return ExitCode::from(1);
        }
    };
    let handle = daemon.shutdown_handle();
    tokio::spawn(async move {
        let mut signals = signals;
        signals.wait().await;
        handle.shutdown();
        // Repeated SIGTERMs (a supervisor signalling the whole process
        // group) do not cut the graceful stop short; a second Ctrl-C does.
        signals.interrupt().await;
        eprintln!("rewards-daemon: second interrupt, exiting at once");
        std::process::exit(130);
    });

    let mut printed = false;
    if let Some(summary) = daemon.input_finished().await {
        for (name, stamp) in daemon.programs().stamps() {
            println!(
                "program {name}: ruleset {} version {} (hash {})",
                stamp.id,
                stamp.version,
                &stamp.hash[..stamp.hash.len().min(12)]
            );
        }
        println!("{summary}");
        printed = true;
        if summary.input_ended {
            if exit_when_done {
                daemon.shutdown();
            } else {
                println!(
                    "input processed; the API keeps serving on http://{} (SIGTERM or Ctrl-C to stop)",
                    daemon.http_addr()
                );
            }
        }
    } else if exit_when_done {
        eprintln!("rewards-daemon: --exit-when-done has no effect without a finite input");
    }
    match daemon.wait().await {
        Ok(summary) => {
            if let (Some(summary), false) = (summary, printed) {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rewards-daemon: {e}");
            ExitCode::from(2)
        }
    }
}

/// SIGTERM and SIGINT listeners, installed before the daemon starts.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The first SIGTERM or SIGINT.
    async fn wait(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match self.term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match self.int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => tracing::info!("SIGTERM received"),
                _ = int => tracing::info!("SIGINT received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("SIGINT received");
        }
    }

    /// The next SIGINT (repeated SIGTERMs are ignored).
    async fn interrupt(&mut self) {
        #[cfg(unix)]
        match self.int.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
