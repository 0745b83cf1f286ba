//! `netsim`: runs seeded simulations of a consortium epoch and checks the results.

use std::process::ExitCode;

use bankmesh_netsim::{Sim, SimConfig};
use clap::Parser;

#[derive(Parser)]
#[command(name = "netsim", about = "Deterministic bankmesh network simulator")]
struct Args {
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of seeds to run, from --seed on.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    #[arg(long, default_value_t = 5)]
    banks: usize,
    #[arg(long, default_value_t = 3)]
    threshold: usize,
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Gossip loss per mille (sync repairs it).
    #[arg(long, default_value_t = 0)]
    loss: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    for seed in args.seed..args.seed + args.runs {
        let mut config = SimConfig::new(seed);
        config.banks = args.banks;
        config.threshold = args.threshold;
        config.clients_per_bank = args.clients;
        config.gossip_loss_permille = args.loss;
        let outcome = Sim::new(config).and_then(|mut sim| {
            sim.run_epoch()?;
            let checked = sim.check_against_truth()?;
            Ok((checked, sim.events(), sim.now(), sim.event_digest()))
        });
        match outcome {
            Ok((checked, events, now, digest)) => println!(
                "seed {seed}: ok, {checked} results exact, {events} events, virtual time {}ms, digest {}",
                now.0 - 1_000_000,
                hex::encode(&digest[..8])
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
