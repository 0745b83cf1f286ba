//! Responsiveness under load: while five banks in this process set up and run a whole epoch
//! (every core busy proving and verifying), a sixth member connects to a bank again and again
//! and measures how long a fresh connection (TCP, Noise handshake, Yamux) and its first ping
//! take. Prints percentiles.
//!
//! `cargo bench -p bankmesh-node --bench responsiveness [-- --clients N]`

// A bench measures wall time: reading the clock is what it is for.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bankmesh_node::inputs;
use bankmesh_node::metrics::Metrics;
use bankmesh_node::net::{build_swarm, Behaviour, BehaviourEvent};
use bankmesh_node::peer::{now, Command, NodeEvent, Peer};
use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::{Bank, Event, MemberSecrets};
use bankmesh_store::replica::Replica;
use bankmesh_store::Store;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{ping, Multiaddr, PeerId, Swarm};
use rand_core::OsRng;
use tokio::sync::{mpsc, oneshot};

const BANKS: usize = 5;

async fn listen(swarm: &mut Swarm<Behaviour>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

fn clients_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--clients")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One probe: dial, wait for the connection and its first ping, hang up.
async fn probe(swarm: &mut Swarm<Behaviour>, target: PeerId, addr: &Multiaddr) -> Option<Duration> {
    let started = Instant::now();
    swarm.dial(addr.clone()).ok()?;
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    let result = loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(_), .. }))
                    if peer == target => break Some(started.elapsed()),
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    eprintln!("dial failed: {error}");
                    break None;
                }
                _ => {}
            },
            _ = &mut deadline => break None,
        }
    };
    let _ = swarm.disconnect_peer_id(target);
    // Let the close go through before the next dial (the bank may dial back: bounded).
    for _ in 0..20 {
        if !swarm.is_connected(&target) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), swarm.select_next_some()).await;
    }
    result
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients = clients_arg();
    let secrets: Vec<MemberSecrets> = (0..=BANKS)
        .map(|_| MemberSecrets::generate(&mut OsRng))
        .collect();
    let mut swarms = Vec::new();
    let mut members = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        let mut swarm = build_swarm(s, BANKS + 1).expect("swarm");
        let addr = listen(&mut swarm).await;
        members.push(s.member_info(i as u16 + 1, &format!("m{}", i + 1), vec![addr.to_string()]));
        swarms.push(swarm);
    }
    let mut probe_swarm = swarms.pop().expect("probe swarm");
    let target_addr: Multiaddr = members[0].addrs[0].parse().expect("addr");
    let target = bankmesh_node::net::peer_id_of(&members[0].identity).expect("peer id");
    let target_addr = target_addr.with(libp2p::multiaddr::Protocol::P2p(target));
    probe_swarm.behaviour_mut().allow.allow_peer(target);
    // The probe is a member that takes no part: setup goes on without it after one attempt,
    // and the submission window closes by the clock (as long as the banks need to post).
    let submit_ms = (clients as u64 * 40).max(15_000);
    let mut timing = Timing::new(
        now().0 + 1_000,
        20_000,
        3_600_000,
        submit_ms,
        30_000,
        600_000,
    );
    timing.dkg_attempt_ms = 6_000;
    let genesis = Genesis::new("bench", 3, timing, members);
    let consortium = Arc::new(Consortium::new(genesis).expect("genesis"));

    let dir = tempfile::tempdir().expect("tempdir");
    let (event_tx, mut event_rx) = mpsc::channel(65_536);
    let mut commands = Vec::new();
    let mut secrets = secrets.into_iter();
    for (i, swarm) in swarms.into_iter().enumerate() {
        let (store, _) = Store::open(&dir.path().join(format!("b{i}"))).expect("store");
        let bank = Bank::new(
            Arc::clone(&consortium),
            i as u16 + 1,
            secrets.next().expect("secrets"),
        );
        let replica = Replica::open(bank, store).expect("replica");
        let peer = Peer::new(
            swarm,
            replica,
            Arc::clone(&consortium),
            event_tx.clone(),
            Arc::new(Metrics::new()),
        )
        .expect("peer");
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(peer.run(rx));
        commands.push(tx);
    }
    for (tx, rows) in commands.iter().zip(inputs::synthetic(BANKS, clients, 1)) {
        let (reply, answer) = oneshot::channel();
        tx.send(Command::Submit {
            epoch: 1,
            scores: rows,
            reply,
        })
        .await
        .expect("send");
        answer.await.expect("reply").expect("submit");
    }

    // Probe until every bank has its results.
    let started = Instant::now();
    let (done_tx, mut done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut done = 0;
        while let Some((_, event)) = event_rx.recv().await {
            if let NodeEvent::Protocol(Event::EpochDone { .. }) = event {
                done += 1;
                if done == BANKS {
                    let _ = done_tx.send(());
                    return;
                }
            }
            if let NodeEvent::Fatal(e) = event {
                panic!("a bank stopped: {e}");
            }
        }
    });
    let mut samples = Vec::new();
    let mut failed = 0;
    loop {
        if done_rx.try_recv().is_ok() {
            break;
        }
        match probe(&mut probe_swarm, target, &target_addr).await {
            Some(d) => samples.push(d),
            None => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(1800) {
            panic!("the epoch did not finish");
        }
    }
    samples.sort();
    println!(
        "5 banks x {clients} clients, epoch in {:.1} s; {} probes (connect + Noise + Yamux + first ping) under load, {failed} failed",
        started.elapsed().as_secs_f64(),
        samples.len()
    );
    for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "  {name}: {:>8.1} ms",
            percentile(&samples, p).as_secs_f64() * 1000.0
        );
    }
}
