//! The `bankmesh` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bankmesh_node::client;
use bankmesh_node::config::DEFAULT_ADMIN;
use bankmesh_node::consortium::{self, AssembleArgs};
use bankmesh_node::daemon::{self, RunArgs};
use bankmesh_node::demo::{self, DemoArgs};
use bankmesh_node::init::{self, InitArgs};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bankmesh",
    version,
    about = "Privacy-preserving score sharing between banks"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    /// Create a member directory: keys (mode 0600), node.toml, member.toml and admin.token.
    Init {
        #[arg(long)]
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// A libp2p address to listen on (repeat for TCP and QUIC).
        #[arg(long, required = true)]
        listen: Vec<String>,
        /// An address other members dial (default: the listen addresses).
        #[arg(long)]
        advertise: Vec<String>,
        /// The admin API's loopback address.
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: std::net::SocketAddr,
    },
    /// Assemble or show the consortium genesis.
    #[command(subcommand)]
    Consortium(ConsortiumCommand),
    /// Run this member's node: epoch after epoch, until SIGINT or SIGTERM.
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        consortium: PathBuf,
    },
    /// Queue this bank's scores (CSV `client_id,score`) for an epoch.
    Submit {
        #[arg(long)]
        dir: PathBuf,
        file: PathBuf,
        /// The epoch (default: the next whose submission window is open).
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Print this bank's results of an epoch as CSV `client_id,average,count`.
    Results {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        epoch: u64,
        /// Wait up to this many seconds for the results.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Show the node's readiness, epochs and peers.
    Status {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Export the log as an audit bundle, verify a bundle offline, or summarize one.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write this node's log as a bundle (JSON Lines; docs/audit.md). Stop the node first.
    Export {
        #[arg(long)]
        dir: PathBuf,
        /// The genesis the node runs with.
        #[arg(long)]
        consortium: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check every line of a bundle against the genesis you hold; exit 0 only if all holds.
    Verify {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        consortium: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// An older bundle of this consortium (verified before): check that this one extends
        /// its checkpoint log (RFC 6962 consistency), rewriting no earlier epoch.
        #[arg(long)]
        extends: Option<PathBuf>,
    },
    /// Summarize a bundle per epoch: members, records by kind, submissions, tags, faults.
    Show {
        #[arg(long)]
        bundle: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConsortiumCommand {
    /// Validate the members' entries and write the genesis.
    Assemble {
        #[arg(long)]
        name: String,
        #[arg(long)]
        threshold: u16,
        /// Seal quorum (default: floor(2n/3) + 1).
        #[arg(long)]
        quorum: Option<u16>,
        /// Fewest banks that must hold a client for its average to be disclosed; below it the
        /// result is withheld (default 1; with 3 no bank alone reads a co-holder's score off a
        /// two-holder average).
        #[arg(long, default_value_t = 1)]
        min_count: u16,
        #[arg(long)]
        epoch_seconds: u64,
        /// When setup starts, RFC 3339 (default: two minutes from now).
        #[arg(long)]
        start: Option<String>,
        /// Length of each epoch's setup, before the epoch starts (default and most: an epoch).
        #[arg(long)]
        setup_seconds: Option<u64>,
        /// Base timeout of one agreement round in ms (default 2000).
        #[arg(long)]
        round_ms: Option<u64>,
        /// Clock skew the schedule allows for, in ms (default 1000).
        #[arg(long)]
        clock_skew_ms: Option<u64>,
        /// A member's member.toml (repeat, in index order).
        #[arg(long, required = true)]
        member: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a genesis with its consortium id.
    Show { file: PathBuf },
}

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BANKMESH_LOG")
        .unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Commands::Run { .. } => "info,libp2p_gossipsub=warn",
        _ => "error",
    };
    init_logs(cli.log_format, default_level);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Commands) -> Result<()> {
    match command {
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
            let report = runtime()?.block_on(demo::run(args))?;
            if synthetic {
                demo::print_summary(&report, &out);
            } else {
                println!(
                    "results in {} ({:.1} s)",
                    out.display(),
                    report.elapsed.as_secs_f64()
                );
            }
        }
        Commands::Init {
            name,
            dir,
            listen,
            advertise,
            admin,
        } => {
            let made = init::run(&InitArgs {
                name,
                dir,
                listen,
                advertise,
                admin,
            })?;
            eprintln!(
                "member entry for the genesis: {}",
                made.member_file.display()
            );
            println!("{}", made.peer_id);
        }
        Commands::Consortium(ConsortiumCommand::Assemble {
            name,
            threshold,
            quorum,
            min_count,
            epoch_seconds,
            start,
            setup_seconds,
            round_ms,
            clock_skew_ms,
            member,
            out,
        }) => {
            let start = start
                .map(|s| {
                    humantime::parse_rfc3339_weak(&s)
                        .with_context(|| format!("--start {s:?} is not an RFC 3339 time"))
                })
                .transpose()?;
            if out.exists() {
                anyhow::bail!("{} exists: refusing to overwrite a genesis", out.display());
            }
            let genesis = consortium::assemble(&AssembleArgs {
                name,
                threshold,
                quorum,
                min_count,
                epoch_seconds,
                start,
                setup_seconds,
                round_ms,
                clock_skew_ms,
                members: member,
            })?;
            std::fs::write(&out, consortium::genesis_file(&genesis)?)
                .with_context(|| format!("writing {}", out.display()))?;
            let c = consortium::load(&out)?;
            print!("{}", consortium::describe(&c));
        }
        Commands::Consortium(ConsortiumCommand::Show { file }) => {
            print!("{}", consortium::describe(&consortium::load(&file)?));
        }
        Commands::Run { dir, consortium } => {
            runtime()?.block_on(daemon::run(RunArgs { dir, consortium }))?;
        }
        Commands::Submit { dir, file, epoch } => {
            let epoch = client::submit(&dir, &file, epoch)?;
            println!("epoch: {epoch}");
        }
        Commands::Results { dir, epoch, wait } => {
            client::results(&dir, epoch, wait, &mut std::io::stdout().lock())?;
        }
        Commands::Status { dir, json } => {
            println!("{}", client::status(&dir, json)?);
        }
        Commands::Audit(command) => audit(command)?,
    }
    Ok(())
}

fn audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Export {
            dir,
            consortium,
            out,
        } => {
            let s = bankmesh_node::audit::export(&dir, &consortium, &out)?;
            for u in &s.unproven {
                eprintln!("warning: no checkpoint: {}", u.why);
            }
            eprintln!(
                "wrote {}: {} records, {} evidence, {} checkpoints",
                out.display(),
                s.records,
                s.evidence,
                s.checkpoints
            );
        }
        AuditCommand::Verify {
            bundle,
            consortium,
            json,
            extends,
        } => {
            let mut v = bankmesh_node::audit::verify(&bundle, &consortium)?;
            if let Some(older) = extends {
                if let Err(why) = bankmesh_node::audit::extends(&older, &bundle) {
                    v.failures.push(bankmesh_store::audit::Failure {
                        line: 0,
                        hash: None,
                        kind: Some("checkpoint".into()),
                        why,
                    });
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", bankmesh_node::audit::report(&v));
            }
            if !v.ok() {
                anyhow::bail!("the bundle does not hold ({} failures)", v.failures.len());
            }
        }
        AuditCommand::Show { bundle } => print!("{}", bankmesh_node::audit::show(&bundle)?),
    }
    Ok(())
}
