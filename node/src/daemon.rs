//! `bankmesh run`: one member's long-lived node. It runs epoch after epoch on the genesis
//! schedule from its own store, serves the admin API, and stops cleanly on SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bankmesh_protocol::{Bank, Culprit, Event};
use bankmesh_store::replica::Replica;
use bankmesh_store::Store;
use serde_json::json;
use tokio::sync::mpsc;

use crate::admin::{self, AdminState, FaultLog};
use crate::config::{load_secrets, load_token, parse_listen, NodeConfig};
use crate::consortium;
use crate::metrics::Metrics;
use crate::net::{build_swarm, peer_id_of};
use crate::peer::{now, Command, NodeEvent, Peer};

pub struct RunArgs {
    pub dir: PathBuf,
    pub consortium: PathBuf,
}

/// How long a clean stop may take before the process exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(20);

pub async fn run(args: RunArgs) -> Result<()> {
    let config = NodeConfig::load(&args.dir)?;
    let consortium = Arc::new(consortium::load(&args.consortium)?);
    let secrets = load_secrets(&args.dir)?;
    let token = load_token(&args.dir)?;
    let identity = secrets.identity().verifying_key().to_bytes();
    let peer_id = peer_id_of(&identity)?;
    let Some(me) = consortium.index_of_identity(&identity) else {
        bail!(
            "{}: this node's key (peer id {peer_id}) is not a member of consortium {:?}; use the genesis assembled with this directory's member.toml",
            args.consortium.display(),
            consortium.genesis.name
        );
    };
    let listed = consortium
        .member(me)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    if listed != config.name {
        bail!(
            "the genesis lists this node's key as member {me} {listed:?}, but node.toml names it {:?}",
            config.name
        );
    }

    // Everything that can be refused is checked before the node starts working.
    let admin_listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .with_context(|| {
            format!(
                "admin API: cannot listen on {} (is another node running, or the port in use?)",
                config.admin
            )
        })?;
    let mut swarm = build_swarm(&secrets, consortium.n())?;
    for text in &config.listen {
        let addr = parse_listen(text)?;
        swarm
            .listen_on(addr)
            .map_err(|e| anyhow!("cannot listen on {text}: {e} (is the port in use?)"))?;
    }
    let store_dir = config.store_dir(&args.dir);
    let (store, report) = Store::open(&store_dir).with_context(|| {
        format!(
            "opening the store {} (is another node running on this directory?)",
            store_dir.display()
        )
    })?;
    tracing::info!(
        member = me,
        name = %config.name,
        peer = %peer_id,
        consortium = %hex::encode(&consortium.id[..8]),
        records = store.len(),
        truncated = report.truncated,
        "starting"
    );
    let bank = Bank::new(Arc::clone(&consortium), me, secrets);
    let mut replica = Replica::open(bank, store).context("replaying the store")?;
    let retention = config.results_retention()?;
    replica.set_results_retention(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));

    let metrics = Arc::new(Metrics::new());
    let faults = Arc::new(FaultLog::default());
    let (event_tx, event_rx) = mpsc::channel(4096);
    let peer = Peer::new(
        swarm,
        replica,
        Arc::clone(&consortium),
        event_tx,
        Arc::clone(&metrics),
    )?;
    let (commands, command_rx) = mpsc::channel(64);
    let mut node = tokio::spawn(peer.run(command_rx));
    let state = Arc::new(AdminState {
        token,
        name: config.name.clone(),
        commands: commands.clone(),
        consortium: Arc::clone(&consortium),
        metrics,
        faults: Arc::clone(&faults),
    });
    let api = tokio::spawn(async move { axum::serve(admin_listener, admin::router(state)).await });
    let mut events = tokio::spawn(log_events(event_rx, faults));
    tracing::info!(admin = %config.admin, "admin API listening");

    let stop = shutdown_signal();
    tokio::pin!(stop);
    let outcome = tokio::select! {
        signal = &mut stop => {
            tracing::info!(%signal, "stopping");
            Ok(())
        }
        fatal = &mut events => match fatal {
            Ok(Some(e)) => Err(anyhow!("node stopped: {e}")),
            _ => Err(anyhow!("node stopped")),
        },
        _ = &mut node => Err(anyhow!("node stopped unexpectedly")),
    };
    let _ = commands.send(Command::Shutdown).await;
    if tokio::time::timeout(STOP_GRACE, node).await.is_err() {
        tracing::warn!("the node did not stop in time");
    }
    api.abort();
    outcome
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Logs what the node reports (never a score or a secret) and keeps its faults for the API.
/// Returns the error if the node stopped on one.
async fn log_events(
    mut events: mpsc::Receiver<(u16, NodeEvent)>,
    faults: Arc<FaultLog>,
) -> Option<String> {
    while let Some((_, event)) = events.recv().await {
        match event {
            NodeEvent::Fatal(e) => {
                tracing::error!(error = %e, "node stopped");
                return Some(e);
            }
            NodeEvent::Fault(f) => {
                let culprit = match f.culprit {
                    Culprit::Member(m) => json!({ "member": m }),
                    Culprit::Submission(h) => json!({ "submission": hex::encode(h) }),
                };
                faults.push(json!({
                    "at_ms": now().0,
                    "culprit": culprit,
                    "kind": format!("{:?}", f.kind),
                    "record": f.record.map(hex::encode),
                    "detail": f.detail,
                }));
            }
            NodeEvent::Result(_) => {}
            NodeEvent::Protocol(e) => log_protocol_event(&e),
        }
    }
    None
}

fn log_protocol_event(e: &Event) {
    match e {
        Event::SetupDecided {
            epoch,
            attempt,
            participants,
        } => tracing::info!(epoch, attempt, ?participants, "epoch keys decided"),
        Event::SetupRetry {
            epoch,
            attempt,
            next,
        } => {
            tracing::warn!(epoch, attempt, ?next, "setup attempt abandoned; retrying")
        }
        Event::PseudonymsReady { epoch, clients } => {
            tracing::info!(epoch, clients, "pseudonyms ready")
        }
        Event::Submitted { epoch, count } => tracing::info!(epoch, count, "submissions posted"),
        Event::Reported { epoch, submissions } => {
            tracing::info!(epoch, submissions, "reported the submissions held")
        }
        Event::Sealed {
            epoch,
            submissions,
            root,
            round,
        } => tracing::info!(
            epoch,
            submissions,
            round,
            root = %hex::encode(&root[..8]),
            "epoch sealed"
        ),
        Event::SubmissionDropped { epoch, .. } => {
            tracing::warn!(epoch, "a submission of ours is not in the final set")
        }
        Event::EpochDone { epoch, results } => tracing::info!(epoch, results, "results ready"),
        Event::Convicted {
            epoch,
            member,
            kind,
            detail,
            record,
        } => tracing::warn!(
            epoch,
            member,
            kind,
            %detail,
            record = %hex::encode(&record[..8]),
            "the log proves a member at fault"
        ),
        Event::Failed {
            epoch,
            phase,
            reason,
        } => tracing::error!(?epoch, ?phase, %reason, "phase failed"),
    }
}
