//! The admin API (axum) on loopback: scores in, status, results, faults and `/metrics` out.
//! Every route but `/v1/health` needs `Authorization: Bearer <DIR/admin.token>`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::{Error, Phase, Status};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::inputs;
use crate::metrics::Metrics;
use crate::peer::{now, Command, NodeStatus};

/// Largest score file the API takes (about 100k clients with long ids).
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Faults kept for `/v1/faults`.
pub const FAULTS_KEPT: usize = 1000;

/// Recent faults, newest last, bounded.
#[derive(Default)]
pub struct FaultLog {
    entries: Mutex<VecDeque<Value>>,
}

impl FaultLog {
    pub fn push(&self, entry: Value) {
        if let Ok(mut e) = self.entries.lock() {
            if e.len() >= FAULTS_KEPT {
                e.pop_front();
            }
            e.push_back(entry);
        }
    }
    fn all(&self) -> Vec<Value> {
        self.entries
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }
}

pub struct AdminState {
    pub token: Zeroizing<String>,
    pub name: String,
    pub commands: mpsc::Sender<Command>,
    pub consortium: Arc<Consortium>,
    pub metrics: Arc<Metrics>,
    pub faults: Arc<FaultLog>,
}

type Shared = Arc<AdminState>;

pub fn router(state: Shared) -> Router {
    let authed = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/submit", post(submit))
        .route("/v1/results", get(results))
        .route("/v1/faults", get(faults))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/v1/health", get(|| async { "alive\n" }))
        .merge(authed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Equal-length comparison that does not stop at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.trim().as_bytes(), state.token.as_bytes()) => next.run(request).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong admin token"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "missing admin token (Authorization: Bearer <DIR/admin.token>)",
        ),
    }
}

async fn node_status(state: &AdminState) -> Result<NodeStatus, Response> {
    let (reply, answer) = oneshot::channel();
    let stopped = || error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    state
        .commands
        .send(Command::Status { reply })
        .await
        .map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())
}

/// The epoch a submission without `--epoch` goes to: the one whose window is open now (by the
/// clock, and not closed early here), or the next one.
pub fn default_epoch(c: &Consortium, s: &Status) -> u64 {
    let t = now();
    let e = c.epoch_at(t);
    let closed_here = s
        .epochs
        .iter()
        .any(|x| x.epoch == e && (x.phase != Phase::Submit || x.mine > 0));
    if t < c.submit_end(e) && !closed_here {
        e
    } else {
        e + 1
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Setup => "setup",
        Phase::Submit => "submit",
        Phase::Seal => "seal",
        Phase::Decrypt => "decrypt",
        Phase::Done => "done",
    }
}

async fn status(State(state): State<Shared>) -> Response {
    let s = match node_status(&state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let c = &state.consortium;
    let p = &s.protocol;
    let current = c.epoch_at(now());
    let quorum_peers = c.quorum().saturating_sub(1);
    let ready = p.keys_ready && p.head_confirmed && s.peers.len() >= quorum_peers;
    let phase = if !p.keys_ready {
        "setup"
    } else {
        p.epochs
            .iter()
            .find(|e| e.epoch == current)
            .map_or("submit", |e| phase_name(e.phase))
    };
    let epochs: Vec<Value> = p
        .epochs
        .iter()
        .map(|e| {
            json!({
                "epoch": e.epoch,
                "phase": phase_name(e.phase),
                "submissions": e.submissions,
                "mine": e.mine,
                "results": e.results,
                "root": e.root.map(hex::encode),
                "failed": e.failed,
            })
        })
        .collect();
    Json(json!({
        "name": state.name,
        "member": p.me,
        "consortium": hex::encode(c.id),
        "live": true,
        "ready": ready,
        "caught_up": p.head_confirmed,
        "keys_ready": p.keys_ready,
        "peers": s.peers,
        "peer_scores": s
            .peer_scores
            .iter()
            .map(|(member, score)| json!({ "member": member, "score": score }))
            .collect::<Vec<Value>>(),
        "members": c.n(),
        "epoch": current,
        "phase": phase,
        "submit_epoch": default_epoch(c, p),
        "setup": {
            "epoch": p.setup_epoch,
            "attempt": p.setup_attempt,
            "participants": p.setup_participants,
            "failed": p.setup_failed,
        },
        "epochs": epochs,
        "convictions": p
            .convictions
            .iter()
            .map(|(member, kind, epoch)| json!({ "member": member, "kind": kind, "epoch": epoch }))
            .collect::<Vec<Value>>(),
        "queues": { "outbox": s.outbox, "pending": s.pending },
        "store_records": s.store_records,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct EpochQuery {
    epoch: Option<u64>,
}

async fn submit(
    State(state): State<Shared>,
    Query(q): Query<EpochQuery>,
    body: axum::body::Bytes,
) -> Response {
    let scores = match inputs::parse_scores(Path::new("request body"), &body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if scores.is_empty() {
        return error(StatusCode::BAD_REQUEST, "request body: no scores");
    }
    let epoch = match q.epoch {
        Some(e) => e,
        None => match node_status(&state).await {
            Ok(s) => default_epoch(&state.consortium, &s.protocol),
            Err(r) => return r,
        },
    };
    let clients = scores.len();
    let (reply, answer) = oneshot::channel();
    let stopped = || error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    if state
        .commands
        .send(Command::Submit {
            epoch,
            scores,
            reply,
        })
        .await
        .is_err()
    {
        return stopped();
    }
    match answer.await {
        Ok(Ok(())) => Json(json!({ "epoch": epoch, "clients": clients })).into_response(),
        Ok(Err(e @ (Error::EpochClosed(_) | Error::AlreadySubmitted(_) | Error::NotInRing(_)))) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(_) => stopped(),
    }
}

async fn results(State(state): State<Shared>, Query(q): Query<EpochQuery>) -> Response {
    let Some(epoch) = q.epoch else {
        return error(StatusCode::BAD_REQUEST, "give ?epoch=N");
    };
    let s = match node_status(&state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let e = s.protocol.epochs.iter().find(|e| e.epoch == epoch);
    let (reply, answer) = oneshot::channel();
    if state
        .commands
        .send(Command::Results { epoch, reply })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    }
    let answer = answer.await.unwrap_or_default();
    if answer.expired {
        return error(
            StatusCode::GONE,
            format!(
                "the results of epoch {epoch} were erased at the end of their retention (results_retention in node.toml)"
            ),
        );
    }
    let rows: Vec<Value> = answer
        .rows
        .iter()
        .map(|r| json!({ "client_id": r.client_id, "average": r.average_2dp(), "count": r.count, "withheld": r.sum.is_none() }))
        .collect();
    Json(json!({
        "epoch": epoch,
        "phase": e.map(|e| phase_name(e.phase)),
        "done": e.is_some_and(|e| e.phase == Phase::Done),
        "failed": e.and_then(|e| e.failed.clone()),
        "results": rows,
    }))
    .into_response()
}

async fn faults(State(state): State<Shared>) -> Response {
    Json(json!({ "faults": state.faults.all() })).into_response()
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
