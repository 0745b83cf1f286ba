//! The `bankmesh` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bankmesh_node::demo::{self, DemoArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bankmesh",
    version,
    about = "Privacy-preserving score sharing between banks"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a whole consortium on loopback: DKG, pseudonyms, encrypted submissions, seal and
    /// threshold decryption, then write each bank's results.
    Demo {
        /// Number of banks.
        #[arg(long, default_value_t = 5)]
        banks: usize,
        /// Decryption threshold (default: a majority of the banks).
        #[arg(long)]
        threshold: Option<usize>,
        /// Directory with bank-<i>.csv files (`client_id,score`); synthetic data if omitted.
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// Output directory for results, the genesis and the banks' stores.
        #[arg(long, default_value = "bankmesh-demo")]
        out: PathBuf,
        /// Clients per bank in the synthetic data set.
        #[arg(long, default_value_t = 300)]
        clients: usize,
        /// Seed of the synthetic data set.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANKMESH_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Commands::Demo {
            banks,
            threshold,
            inputs,
            out,
            clients,
            seed,
            timeout,
        } => {
            let synthetic = inputs.is_none();
            let args = DemoArgs {
                banks,
                threshold,
                inputs,
                out: out.clone(),
                clients,
                seed,
                timeout: Duration::from_secs(timeout),
            };
            match runtime.block_on(demo::run(args)) {
                Ok(report) => {
                    if synthetic {
                        demo::print_summary(&report, &out);
                    } else {
                        println!(
                            "results in {} ({:.1} s)",
                            out.display(),
                            report.elapsed.as_secs_f64()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
