//! Over real libp2p on loopback: a record that fails validation is rejected by the node, named
//! as a fault of the member that published it, and never stored; a valid one is stored; a
//! member flooding requests is throttled.

use std::sync::Arc;
use std::time::Duration;

use bankmesh_node::metrics::ThrottleLabels;
use bankmesh_node::net::{build_swarm, topic, BehaviourEvent};
use bankmesh_node::peer::{now, Command, NodeEvent, Peer};
use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::messages::Request;
use bankmesh_protocol::record::{Body, Record};
use bankmesh_protocol::{Bank, MemberSecrets};
use bankmesh_protocol::{Culprit, FaultKind};
use bankmesh_store::replica::Replica;
use bankmesh_store::Store;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{request_response, Multiaddr};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::{mpsc, oneshot};

async fn listen(swarm: &mut libp2p::Swarm<bankmesh_node::net::Behaviour>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// One honest node running, and a rogue member's bare swarm dialled to it.
struct Setup {
    consortium: Arc<Consortium>,
    rogue: MemberSecrets,
    rogue_swarm: libp2p::Swarm<bankmesh_node::net::Behaviour>,
    honest_peer: libp2p::PeerId,
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<(u16, NodeEvent)>,
    metrics: Arc<bankmesh_node::metrics::Metrics>,
    _dir: tempfile::TempDir,
}

async fn setup(seed: u8) -> Setup {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let honest = MemberSecrets::generate(&mut rng);
    let rogue = MemberSecrets::generate(&mut rng);
    let bystander = MemberSecrets::generate(&mut rng);
    let mut honest_swarm = build_swarm(&honest, 2).unwrap();
    let mut rogue_swarm = build_swarm(&rogue, 2).unwrap();
    let honest_addr = listen(&mut honest_swarm).await;
    let rogue_addr = listen(&mut rogue_swarm).await;
    // The DKG starts far in the future: these tests are only about what a peer sends.
    let genesis = Genesis::new(
        "validation",
        2,
        Timing::new(now().0 + 3_600_000, 60_000, 600_000, 60_000, 60_000, 60_000),
        // A third member that never runs: the onion relay needs two others.
        vec![
            honest.member_info(1, "honest", vec![honest_addr.to_string()]),
            rogue.member_info(2, "rogue", vec![rogue_addr.to_string()]),
            bystander.member_info(3, "bystander", vec![]),
        ],
    );
    let consortium = Arc::new(Consortium::new(genesis).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let replica = Replica::open(Bank::new(Arc::clone(&consortium), 1, honest), store).unwrap();
    let (events_tx, events) = mpsc::channel(1024);
    let metrics = Arc::new(bankmesh_node::metrics::Metrics::new());
    let peer = Peer::new(
        honest_swarm,
        replica,
        Arc::clone(&consortium),
        events_tx,
        Arc::clone(&metrics),
    )
    .unwrap();
    let (commands, commands_rx) = mpsc::channel(8);
    tokio::spawn(peer.run(commands_rx));
    let honest_peer =
        bankmesh_node::net::peer_id_of(&consortium.genesis.members[0].identity).unwrap();
    rogue_swarm.behaviour_mut().allow.allow_peer(honest_peer);
    rogue_swarm.dial(honest_addr).unwrap();
    Setup {
        consortium,
        rogue,
        rogue_swarm,
        honest_peer,
        commands,
        events,
        metrics,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_gossip_is_rejected_and_attributed() {
    let Setup {
        consortium,
        rogue,
        mut rogue_swarm,
        commands,
        mut events,
        ..
    } = setup(4).await;
    // The rogue member connects and subscribes, then publishes: garbage, a record signed by
    // itself but claiming another consortium... and finally one valid record.
    let t = topic(&consortium.id);
    rogue_swarm.behaviour_mut().gossipsub.subscribe(&t).unwrap();
    let mut other = consortium.id;
    other[0] ^= 1;
    let bad = vec![
        b"not a record".to_vec(),
        Record::identified(
            &other,
            rogue.identity(),
            2,
            1,
            [0; 32],
            Body::OprfUsage {
                epoch: 1,
                served: vec![],
            },
        )
        .bytes()
        .to_vec(),
    ];
    let good = Record::identified(
        &consortium.id,
        rogue.identity(),
        2,
        1,
        [0; 32],
        Body::OprfUsage {
            epoch: 1,
            served: vec![],
        },
    );
    let mut outbox: Vec<Vec<u8>> = bad.clone();
    outbox.push(good.bytes().to_vec());
    let mut faults = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while faults.len() < bad.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "faults seen: {faults:?}"
        );
        tokio::select! {
            _ = rogue_swarm.select_next_some() => {}
            Some((_, event)) = events.recv() => {
                if let NodeEvent::Fault(f) = event {
                    faults.push(f);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                while let Some(bytes) = outbox.first() {
                    match rogue_swarm.behaviour_mut().gossipsub.publish(t.clone(), bytes.clone()) {
                        Ok(_) => { outbox.remove(0); }
                        Err(_) => break,
                    }
                }
            }
        }
    }
    assert!(
        faults.iter().all(|f| f.culprit == Culprit::Member(2)),
        "{faults:?}"
    );
    assert!(faults.iter().any(|f| f.kind == FaultKind::Malformed));
    assert!(faults.iter().any(|f| f.kind == FaultKind::WrongConsortium));
    // Its invalid messages cost the rogue member its gossipsub score here.
    let (reply, answer) = oneshot::channel();
    commands.send(Command::Status { reply }).await.unwrap();
    let scores = answer.await.unwrap().peer_scores;
    assert!(
        scores.iter().any(|&(m, score)| m == 2 && score < 0.0),
        "the rogue member's score: {scores:?}"
    );

    // The valid record arrives and is stored; the invalid ones are not.
    let mut stored = false;
    for _ in 0..100 {
        let _ =
            tokio::time::timeout(Duration::from_millis(50), rogue_swarm.select_next_some()).await;
        let (reply, answer) = oneshot::channel();
        commands.send(Command::Status { reply }).await.unwrap();
        let status = answer.await.unwrap().protocol;
        if status.epochs.iter().any(|e| e.epoch == 1) {
            stored = true;
            break;
        }
    }
    assert!(stored, "the valid Ready record was applied");
    commands.send(Command::Shutdown).await.unwrap();
}

/// A member flooding direct requests is cut at its rate: the node answers its burst, then
/// drops what comes faster than the rate before it reaches the protocol thread, and counts
/// each dropped request against that member. At most 50 requests are in flight, under
/// libp2p's own stream limits, so every failure the rogue sees is the throttle's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_requests_is_throttled() {
    let Setup {
        mut rogue_swarm,
        honest_peer,
        commands,
        metrics,
        ..
    } = setup(5).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !rogue_swarm.is_connected(&honest_peer) {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        let _ =
            tokio::time::timeout(Duration::from_millis(100), rogue_swarm.select_next_some()).await;
    }
    let throttled = || {
        metrics
            .throttled
            .get_or_create(&ThrottleLabels {
                member: "2".into(),
                class: "sync".into(),
            })
            .get()
    };
    const IN_FLIGHT: usize = 50;
    let flood = tokio::time::Instant::now();
    let (mut sent, mut answered, mut failed) = (0usize, 0usize, 0usize);
    loop {
        let in_flight = sent - answered - failed;
        let enough = throttled() > 0 && sent >= 1_500;
        if enough && in_flight == 0 {
            break;
        }
        if !enough && in_flight < IN_FLIGHT {
            rogue_swarm
                .behaviour_mut()
                .direct
                .send_request(&honest_peer, Request::Heads);
            sent += 1;
            continue;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{answered} answered, {failed} failed of {sent}"
        );
        let Ok(event) =
            tokio::time::timeout(Duration::from_millis(500), rogue_swarm.select_next_some()).await
        else {
            continue;
        };
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Direct(request_response::Event::Message {
                message: request_response::Message::Response { .. },
                ..
            })) => answered += 1,
            SwarmEvent::Behaviour(BehaviourEvent::Direct(
                request_response::Event::OutboundFailure { .. },
            )) => failed += 1,
            _ => {}
        }
    }
    let elapsed = flood.elapsed().as_secs_f64();
    eprintln!("{answered} answered, {failed} failed of {sent} in {elapsed:.1} s");
    // Sync requests: bursts of 800, then 200 a second (node/src/throttle.rs).
    assert!(answered >= 800, "the burst is answered: {answered}");
    let allowed = 800.0 + 200.0 * elapsed + IN_FLIGHT as f64;
    assert!(
        (answered as f64) <= allowed,
        "{answered} answered, more than the {allowed:.0} the rate allows"
    );
    assert!(failed > 0);
    assert_eq!(
        failed as u64,
        throttled(),
        "every failure is a throttled request"
    );
    commands.send(Command::Shutdown).await.unwrap();
}
