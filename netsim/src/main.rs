//! `netsim`: runs seeded simulations of a consortium and checks the properties of the seal and
//! the results. `netsim run` runs one scenario for one seed; `netsim sweep` runs scenarios over
//! many seeds. A violation prints the seed and the command that replays it, and exits non-zero.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bankmesh_netsim::check::Outcome;
use bankmesh_netsim::scenario::{self, Size};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "netsim", about = "Deterministic bankmesh network simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Copy)]
struct SizeArgs {
    #[arg(long, default_value_t = 5)]
    banks: usize,
    /// Clients per bank.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Epochs (default: the scenario's own).
    #[arg(long)]
    epochs: Option<u64>,
}

impl SizeArgs {
    fn size(self) -> Size {
        Size {
            banks: self.banks,
            clients: self.clients,
            epochs: self.epochs,
        }
    }
    fn flags(self) -> String {
        let mut s = String::new();
        let d = Size::default();
        if self.banks != d.banks {
            s.push_str(&format!(" --banks {}", self.banks));
        }
        if self.clients != d.clients {
            s.push_str(&format!(" --clients {}", self.clients));
        }
        if let Some(e) = self.epochs {
            s.push_str(&format!(" --epochs {e}"));
        }
        s
    }
}

#[derive(Subcommand)]
enum Command {
    /// Runs one scenario for one seed and prints what happened.
    Run {
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        size: SizeArgs,
    },
    /// Runs scenarios for many seeds and prints a table.
    Sweep {
        /// Seeds per scenario.
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 1)]
        first: u64,
        /// Scenarios, comma-separated (default: all); `adversarial` names the long-sweep set.
        #[arg(long)]
        scenarios: Option<String>,
        /// Runs at once (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        size: SizeArgs,
    },
}

/// One run's outcome.
struct Ran {
    outcome: Result<Outcome, String>,
    digest: [u8; 32],
    events: u64,
    virtual_ms: u64,
    summary: Vec<String>,
}

fn run_one(name: &str, seed: u64, size: Size) -> Ran {
    let result = catch_unwind(AssertUnwindSafe(|| scenario::run(name, seed, size)));
    let failed = |why: String| Ran {
        outcome: Err(why),
        digest: [0; 32],
        events: 0,
        virtual_ms: 0,
        summary: Vec::new(),
    };
    match result {
        Ok(Ok(r)) => Ran {
            outcome: Ok(r.outcome),
            digest: r.digest,
            events: r.events,
            virtual_ms: r.virtual_ms,
            summary: r.summary,
        },
        Ok(Err(e)) => failed(e),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed(format!("panicked: {msg}"))
        }
    }
}

/// Wall-clock time, for the sweep's progress lines only: simulated time never comes from it.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> Instant {
    Instant::now()
}

fn problems(ran: &Ran) -> Vec<String> {
    match &ran.outcome {
        Ok(o) => o.violations.clone(),
        Err(e) => vec![e.clone()],
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            scenario,
            seed,
            size,
        } => {
            if scenario::build(&scenario, seed, size.size()).is_none() {
                eprintln!(
                    "error: unknown scenario {scenario:?}; known: {}",
                    scenario::ALL.join(", ")
                );
                return ExitCode::from(2);
            }
            let ran = run_one(&scenario, seed, size.size());
            println!("scenario {scenario}, seed {seed}");
            for line in &ran.summary {
                println!("  {line}");
            }
            println!(
                "  {} events, virtual time {:.1} s",
                ran.events,
                ran.virtual_ms as f64 / 1000.0
            );
            let bad = problems(&ran);
            for p in &bad {
                println!("VIOLATION: {p}");
            }
            println!("digest: {}", hex::encode(ran.digest));
            if bad.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "seed {seed} violates the properties; replay with: netsim run --scenario {scenario} --seed {seed}{}",
                    size.flags()
                );
                ExitCode::FAILURE
            }
        }
        Command::Sweep {
            seeds,
            first,
            scenarios,
            jobs,
            size,
        } => {
            let names: Vec<String> = match scenarios.as_deref() {
                None => scenario::ALL.iter().map(|s| s.to_string()).collect(),
                Some("adversarial") => scenario::ADVERSARIAL
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
            };
            for n in &names {
                if scenario::build(n, first, size.size()).is_none() {
                    eprintln!(
                        "error: unknown scenario {n:?}; known: {}",
                        scenario::ALL.join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
            let work: Vec<(usize, u64)> = (0..names.len())
                .flat_map(|i| (first..first + seeds).map(move |s| (i, s)))
                .collect();
            let jobs = jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1);
            let next = AtomicUsize::new(0);
            let done = AtomicUsize::new(0);
            let results: Mutex<Vec<(usize, u64, Ran)>> = Mutex::new(Vec::new());
            let started = wall_clock();
            std::thread::scope(|scope| {
                for _ in 0..jobs {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&(sc, seed)) = work.get(i) else {
                            break;
                        };
                        let ran = run_one(&names[sc], seed, size.size());
                        let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                        if finished.is_multiple_of(50) || finished == work.len() {
                            eprintln!(
                                "  {finished}/{} runs, {:.0} s",
                                work.len(),
                                started.elapsed().as_secs_f64()
                            );
                        }
                        if let Ok(mut r) = results.lock() {
                            r.push((sc, seed, ran));
                        }
                    });
                }
            });
            let results = results.into_inner().unwrap_or_default();
            println!(
                "{:<20} {:>6} {:>6} {:>9} {:>10} {:>9} {:>9}",
                "scenario", "runs", "ok", "violated", "late-rnds", "events", "virt-s"
            );
            let mut failures = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let mine: Vec<&(usize, u64, Ran)> = results.iter().filter(|r| r.0 == i).collect();
                let bad: Vec<&&(usize, u64, Ran)> =
                    mine.iter().filter(|r| !problems(&r.2).is_empty()).collect();
                let late: usize = mine
                    .iter()
                    .filter_map(|r| r.2.outcome.as_ref().ok())
                    .map(|o| o.late_rounds)
                    .sum();
                let runs = mine.len().max(1) as f64;
                let events: f64 = mine.iter().map(|r| r.2.events as f64).sum::<f64>() / runs;
                let virt: f64 =
                    mine.iter().map(|r| r.2.virtual_ms as f64).sum::<f64>() / runs / 1000.0;
                println!(
                    "{:<20} {:>6} {:>6} {:>9} {:>10} {:>9.0} {:>9.1}",
                    name,
                    mine.len(),
                    mine.len() - bad.len(),
                    bad.len(),
                    late,
                    events,
                    virt
                );
                for r in bad {
                    failures.push((name.clone(), r.1, problems(&r.2)));
                }
            }
            println!(
                "{} runs in {:.0} s",
                results.len(),
                started.elapsed().as_secs_f64()
            );
            for (name, seed, why) in &failures {
                println!("VIOLATION {name} seed {seed}: {}", why.join("; "));
                println!(
                    "  replay with: netsim run --scenario {name} --seed {seed}{}",
                    size.flags()
                );
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
