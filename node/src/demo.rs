//! `bankmesh demo`: a whole consortium on loopback in one process. Each bank has its own keys,
//! sled store, libp2p swarm and TCP port; they share nothing but the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::Phase;
use bankmesh_protocol::{Bank, ClientResult, Event, MemberSecrets, MAX_MEMBERS};
use bankmesh_store::replica::Replica;
use bankmesh_store::Store;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use rand_core::OsRng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::inputs::{self, Scores};
use crate::metrics::Metrics;
use crate::net::build_swarm;
use crate::peer::{now, Command, NodeEvent, Peer};

/// The epoch the demo runs.
const EPOCH: u64 = 1;
/// The setup window: the DKG on loopback takes a second or two; epoch 1 opens when it ends.
const DEMO_SETUP_MS: u64 = 10_000;
/// The submission window: every bank sends one onion packet every `DEMO_PACKET_MS` in it, so
/// it carries up to 1,500 clients per bank. 30 s: five banks in one process on two cores prove
/// and check some 1,800 submissions in it (at 10 s the default data set missed the deadline).
/// A packet every 20 ms, not 5: at 5 ms the cover traffic alone (30,000 packets of three hops)
/// left the two cores too little time, inbound streams overflowed and submissions were lost.
const DEMO_SUBMIT_MS: u64 = 30_000;
const DEMO_PACKET_MS: u64 = 20;

pub struct DemoArgs {
    pub banks: usize,
    pub threshold: Option<usize>,
    pub inputs: Option<PathBuf>,
    pub out: PathBuf,
    pub clients: usize,
    pub seed: u64,
    pub timeout: Duration,
}

/// What the demo did, for the summary and for tests.
pub struct DemoReport {
    pub scores: Vec<Scores>,
    pub results: Vec<Vec<ClientResult>>,
    pub elapsed: Duration,
}

fn check_args(args: &DemoArgs) -> Result<usize> {
    // Each submission travels a path of two other banks (DESIGN 6).
    if !(3..=MAX_MEMBERS).contains(&args.banks) {
        bail!(
            "--banks must be between 3 and {MAX_MEMBERS} (the onion relay needs two others), got {}",
            args.banks
        );
    }
    let t = args.threshold.unwrap_or(args.banks / 2 + 1);
    if !(2..=args.banks).contains(&t) {
        bail!(
            "--threshold must be between 2 and --banks ({}), got {t}",
            args.banks
        );
    }
    Ok(t)
}

/// Reads every bank's file, or makes a synthetic set; all input errors surface here, before
/// any network work.
fn load_inputs(args: &DemoArgs) -> Result<Vec<Scores>> {
    match &args.inputs {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("{}: input directory not found", dir.display());
            }
            (1..=args.banks)
                .map(|i| Ok(inputs::read_scores(&inputs::bank_file(dir, i))?))
                .collect()
        }
        None => Ok(inputs::synthetic(args.banks, args.clients, args.seed)),
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

pub async fn run(args: DemoArgs) -> Result<DemoReport> {
    let started = Instant::now();
    let threshold = check_args(&args)?;
    let scores = load_inputs(&args)?;
    let n = args.banks;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.inputs.is_none() {
        let dir = args.out.join("inputs");
        std::fs::create_dir_all(&dir)?;
        for (i, rows) in scores.iter().enumerate() {
            inputs::write_scores(&inputs::bank_file(&dir, i + 1), rows)?;
        }
    }

    // Keys and listening swarms first: the genesis names every member's address.
    let mut secrets = Vec::new();
    let mut swarms = Vec::new();
    let mut members = Vec::new();
    for i in 1..=n {
        let s = MemberSecrets::generate(&mut OsRng);
        let mut swarm = build_swarm(&s, n)?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>()?)?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let index = u16::try_from(i)?;
        members.push(s.member_info(index, &format!("bank-{i}"), vec![addr.to_string()]));
        secrets.push(s);
        swarms.push(swarm);
    }
    // Windows close at their deadlines, never early (DESIGN 6): a short setup and submission
    // window keep the demo quick; the seal and decryption finish as soon as they can.
    let windows = Timing::new(
        now().0 + 1_000,
        DEMO_SETUP_MS,
        1_200_000,
        DEMO_SUBMIT_MS,
        120_000,
        300_000,
    );
    let mut genesis = Genesis::new("bankmesh-demo", u16::try_from(threshold)?, windows, members);
    genesis.privacy.packet_ms = DEMO_PACKET_MS;
    std::fs::write(args.out.join("consortium.toml"), genesis.to_toml())?;
    let consortium = Arc::new(Consortium::new(genesis)?);
    eprintln!(
        "bankmesh demo: {n} banks, threshold {threshold}, seal quorum {}, consortium {}",
        consortium.quorum(),
        hex::encode(&consortium.id[..8])
    );

    // Start every peer with its own durable store.
    let (event_tx, mut event_rx) = mpsc::channel(65_536);
    let mut commands = Vec::new();
    let mut tasks = Vec::new();
    for (i, (s, swarm)) in secrets.into_iter().zip(swarms).enumerate() {
        let dir = args.out.join("stores").join(format!("bank-{}", i + 1));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let (store, _) =
            Store::open(&dir).with_context(|| format!("opening store {}", dir.display()))?;
        let bank = Bank::new(Arc::clone(&consortium), u16::try_from(i + 1)?, s);
        let replica = Replica::open(bank, store)?;
        let peer = Peer::new(
            swarm,
            replica,
            Arc::clone(&consortium),
            event_tx.clone(),
            Arc::new(Metrics::new()),
        )?;
        let (tx, rx) = mpsc::channel(64);
        tasks.push(tokio::spawn(peer.run(rx)));
        commands.push(tx);
    }
    for (tx, rows) in commands.iter().zip(&scores) {
        let (reply, answer) = oneshot::channel();
        tx.send(Command::Submit {
            epoch: EPOCH,
            scores: rows.clone(),
            reply,
        })
        .await?;
        if let Err(e) = answer.await? {
            bail!("submitting scores: {e}");
        }
    }

    let total: usize = scores.iter().map(Vec::len).sum();
    let pb = progress_bar(total as u64);
    pb.set_message("distributed key generation");
    let outcome = watch(&commands, &mut event_rx, &pb, n, started + args.timeout).await;
    pb.finish_and_clear();
    if let Err(e) = outcome {
        shutdown(&commands).await;
        return Err(e);
    }

    let mut results = Vec::new();
    for tx in &commands {
        let (reply, answer) = oneshot::channel();
        tx.send(Command::Results {
            epoch: EPOCH,
            reply,
        })
        .await?;
        results.push(answer.await?.rows);
    }
    shutdown(&commands).await;
    for t in tasks {
        let _ = t.await;
    }
    // The auditors' bundle, from bank 1's log (its node is stopped, so its store is free).
    crate::audit::export_store(
        &args.out.join("stores").join("bank-1"),
        &args.out.join("consortium.toml"),
        &args.out.join("audit.jsonl"),
    )?;
    for (i, (rows, res)) in scores.iter().zip(&results).enumerate() {
        if res.len() != rows.len() {
            bail!(
                "bank-{} got {} results for {} clients",
                i + 1,
                res.len(),
                rows.len()
            );
        }
        inputs::write_results(
            &args.out.join(format!("bank-{}-results.csv", i + 1)),
            rows,
            res,
        )?;
    }
    Ok(DemoReport {
        scores,
        results,
        elapsed: started.elapsed(),
    })
}

async fn shutdown(commands: &[mpsc::Sender<Command>]) {
    for tx in commands {
        let _ = tx.send(Command::Shutdown).await;
    }
}

/// Shows progress until every bank has all its results; fails on any failure or the timeout.
async fn watch(
    commands: &[mpsc::Sender<Command>],
    events: &mut mpsc::Receiver<(u16, NodeEvent)>,
    pb: &ProgressBar,
    n: usize,
    deadline: Instant,
) -> Result<()> {
    let mut dkg_done = 0;
    let mut sealed = 0;
    let mut submitted = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            Some((member, event)) = events.recv() => match event {
                NodeEvent::Fatal(e) => bail!("bank-{member} stopped: {e}"),
                NodeEvent::Fault(f) => pb.suspend(|| eprintln!("  bank-{member}: fault by {f}")),
                NodeEvent::Result(_) => pb.inc(1),
                NodeEvent::Protocol(event) => match event {
                    Event::Failed { phase, reason, .. } => bail!("bank-{member} failed in {phase:?}: {reason}"),
                    Event::SubmissionDropped { client_id, .. } => bail!("bank-{member}: submission for {client_id} was not sealed"),
                    Event::SetupDecided { .. } => {
                        dkg_done += 1;
                        if dkg_done == n {
                            pb.suspend(|| eprintln!("  both DKG runs decided at all {n} banks"));
                            pb.set_message("pseudonyms and encrypted submissions");
                        }
                    }
                    Event::Submitted { count, .. } => {
                        submitted += count;
                        pb.suspend(|| eprintln!("  bank-{member} posted {count} encrypted submissions"));
                    }
                    Event::Sealed { submissions, .. } => {
                        sealed += 1;
                        if sealed == n {
                            pb.suspend(|| eprintln!("  epoch sealed at all banks: {submissions} submissions ({submitted} posted)"));
                            pb.set_message("threshold decryption");
                        }
                    }
                    _ => {}
                },
            },
            _ = tick.tick() => {
                if Instant::now() > deadline {
                    bail!("timed out waiting for results");
                }
                let mut done = 0;
                for tx in commands {
                    let (reply, answer) = oneshot::channel();
                    if tx.send(Command::Status { reply }).await.is_err() {
                        bail!("a bank stopped unexpectedly");
                    }
                    let status = answer.await?.protocol;
                    if let Some(e) = status.epochs.iter().find(|e| e.epoch == EPOCH) {
                        if let Some(f) = &e.failed {
                            bail!("bank-{} failed: {f}", status.me);
                        }
                        if e.phase == Phase::Done {
                            done += 1;
                        }
                    }
                }
                if done == commands.len() {
                    return Ok(());
                }
            }
        }
    }
}

/// Prints a short per-bank table after a demo.
pub fn print_summary(report: &DemoReport, out: &Path) {
    println!(
        "{:<8} {:>8} {:>8} {:>8} {:>10}",
        "bank", "clients", "results", "shared", "mean avg"
    );
    for (i, res) in report.results.iter().enumerate() {
        let shared = res.iter().filter(|r| r.count > 1).count();
        let averages: Vec<f64> = res
            .iter()
            .filter_map(|r| Some(r.sum? as f64 / f64::from(r.count.max(1))))
            .collect();
        let mean = if averages.is_empty() {
            0.0
        } else {
            averages.iter().sum::<f64>() / averages.len() as f64
        };
        let clients = report.scores.get(i).map_or(0, Vec::len);
        println!(
            "{:<8} {:>8} {:>8} {:>8} {:>10.2}",
            format!("bank-{}", i + 1),
            clients,
            res.len(),
            shared,
            mean
        );
    }
    println!(
        "results in {} ({:.1} s)",
        out.display(),
        report.elapsed.as_secs_f64()
    );
}
