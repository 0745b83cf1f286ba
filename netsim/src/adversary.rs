//! The adversary hook (STYLE 7): a strategy controls everything one faulty member sends. The
//! member runs the real state machine; the strategy sees each record it publishes and each
//! answer it gives, and decides what each peer gets and when: withheld, delayed, replaced by a
//! record it signs itself with the member's key (equivocation), different things to different
//! peers.

use std::collections::BTreeMap;

use bankmesh_protocol::consensus::VoteKind;
use bankmesh_protocol::crypto::oprf::{self, BatchContext};
use bankmesh_protocol::crypto::ring::{self, RingContext, RingKey};
use bankmesh_protocol::crypto::sealed::{self, ShareContext};
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::gossip;
use bankmesh_protocol::keys::EpochSecret;
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::record::{
    Body, Instance, Payload, Record, Run, SignedEvaluation, Submission, Value,
};
use bankmesh_protocol::relay::{self, packet};
use bankmesh_protocol::setup::epoch_keys;
use bankmesh_protocol::{Bank, Hash, MemberIndex, MemberSecrets, Time};
use bankmesh_store::Store;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::Signer;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use zeroize::Zeroizing;

/// One copy of a record for one peer: on gossip, or as an onion packet to a first hop.
pub struct Send {
    pub to: MemberIndex,
    pub bytes: Vec<u8>,
    pub delay_ms: u64,
    pub via: Via,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Gossip,
    Onion,
}

/// What a strategy may use: the member's keys and log, the other members, time, randomness.
pub struct Ctx<'a> {
    pub me: MemberIndex,
    pub peers: Vec<MemberIndex>,
    pub now: Time,
    pub consortium: &'a Consortium,
    pub secrets: &'a MemberSecrets,
    pub store: &'a Store,
    /// The member's own state machine, read-only (its epoch keys, for instance).
    pub bank: &'a Bank,
    pub rng: &'a mut ChaCha20Rng,
}

impl Ctx<'_> {
    /// Signs `body` as the member at `seq` after `prev`.
    pub fn sign(&self, seq: u64, prev: Hash, body: Body) -> Record {
        Record::identified(
            &self.consortium.id,
            self.secrets.identity(),
            self.me,
            seq,
            prev,
            body,
        )
    }

    /// `record` as the member puts it on gossip (a submission with its stamp as exit).
    pub fn frame(&self, record: &Record) -> Vec<u8> {
        gossip::frame(
            &self.consortium.id,
            self.me,
            self.secrets.identity(),
            record,
        )
    }

    fn to_all(&self, record: &Record, delay_ms: u64) -> Vec<Send> {
        let bytes = self.frame(record);
        self.peers
            .iter()
            .map(|&to| Send {
                to,
                bytes: bytes.clone(),
                delay_ms,
                via: Via::Gossip,
            })
            .collect()
    }

    /// Records of `author` in the member's log, in chain order.
    fn records_of(&self, author: MemberIndex) -> Vec<Record> {
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(Some(h)) = self.store.chain_at(author, seq) {
            match self.store.get(&h) {
                Ok(Some(bytes)) => match Record::from_trusted_bytes(&bytes) {
                    Ok(r) => out.push(r),
                    Err(_) => break,
                },
                _ => break,
            }
            seq += 1;
        }
        out
    }

    /// The complete reports of other members in the member's log, by member.
    fn reports(&self, epoch: u64) -> BTreeMap<MemberIndex, (Hash, usize)> {
        let mut out = BTreeMap::new();
        let Ok(hashes) = self.store.epoch_hashes(epoch) else {
            return out;
        };
        let mut sizes: BTreeMap<MemberIndex, usize> = BTreeMap::new();
        for h in hashes {
            let Ok(Some(bytes)) = self.store.get(&h) else {
                continue;
            };
            let Ok(r) = Record::from_trusted_bytes(&bytes) else {
                continue;
            };
            if let Payload::Identified(i) = r.payload() {
                if let Body::Report { last, hashes, .. } = &i.body {
                    *sizes.entry(i.author).or_default() += hashes.len();
                    if *last {
                        out.insert(i.author, (r.hash(), 0));
                    }
                }
            }
        }
        for (m, (_, n)) in out.iter_mut() {
            *n = sizes.get(m).copied().unwrap_or(0);
        }
        out
    }
}

pub trait Adversary {
    /// What becomes of a record the member publishes.
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send>;
    /// What the member sends of its own accord, after each of its steps.
    fn on_tick(&mut self, _ctx: &mut Ctx<'_>) -> Vec<Send> {
        Vec::new()
    }
    /// What becomes of the member's answer to `to`'s `request` (sync serves its records too).
    fn on_response(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _to: MemberIndex,
        _request: &Request,
        response: Response,
    ) -> Response {
        response
    }
}

fn vote_of(record: &Record) -> Option<(Instance, VoteKind, u32, Option<Value>)> {
    match record.payload() {
        Payload::Identified(i) => match &i.body {
            Body::Vote {
                instance,
                kind,
                round,
                value,
            } => Some((*instance, *kind, *round, value.clone())),
            _ => None,
        },
        Payload::Submission(_) => None,
    }
}

/// Times its votes to split the honest members: each vote goes at once to the lower half of
/// the peers and, to the upper half, only about when their round's timeouts fire.
pub struct LateCosigner {
    pub round_ms: u64,
}

impl Adversary for LateCosigner {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        let Some((_, kind, round, _)) = vote_of(record) else {
            return ctx.to_all(record, 0);
        };
        let timeout = self.round_ms + self.round_ms * u64::from(round) / 2;
        let half = ctx.peers.len() / 2;
        let late = match kind {
            VoteKind::Prevote => timeout.saturating_sub(ctx.rng.next_u64() % 200),
            VoteKind::Precommit => timeout + ctx.rng.next_u64() % 200,
        };
        ctx.peers
            .iter()
            .enumerate()
            .map(|(i, &to)| Send {
                to,
                bytes: record.bytes().to_vec(),
                delay_ms: if i < half { 0 } else { late },
                via: Via::Gossip,
            })
            .collect()
    }
}

/// Signs two different votes (and proposals) for every round and step: the real one to one
/// half of the peers, another to the other half (nil for a value, its last value for nil).
#[derive(Default)]
pub struct EquivocatingVoter {
    last_value: BTreeMap<Instance, Value>,
}

impl Adversary for EquivocatingVoter {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        let Some((seq, prev)) = record.chain_position().map(|(_, s, p)| (s, p)) else {
            return ctx.to_all(record, 0);
        };
        let Payload::Identified(i) = record.payload() else {
            return ctx.to_all(record, 0);
        };
        let other = match &i.body {
            Body::Vote {
                instance,
                kind,
                round,
                value,
            } => {
                let flipped = match value {
                    Some(v) => {
                        self.last_value.insert(*instance, v.clone());
                        None
                    }
                    None => self.last_value.get(instance).cloned(),
                };
                Body::Vote {
                    instance: *instance,
                    kind: *kind,
                    round: *round,
                    value: flipped,
                }
            }
            Body::Proposal {
                instance,
                round,
                valid_round,
                value: Value::Seal { reports },
            } => {
                // Another value of the right shape: swap one pinned report for one left out.
                let all = ctx.reports(match instance {
                    Instance::Seal { epoch } => *epoch,
                    Instance::Setup { .. } => 0,
                });
                let mut pins = reports.clone();
                if let Some((m, (h, _))) =
                    all.iter().find(|(m, _)| !pins.iter().any(|p| p.0 == **m))
                {
                    if let Some(last) = pins.last_mut() {
                        *last = (*m, *h);
                    }
                    pins.sort_unstable();
                }
                Body::Proposal {
                    instance: *instance,
                    round: *round,
                    valid_round: *valid_round,
                    value: Value::Seal { reports: pins },
                }
            }
            _ => return ctx.to_all(record, 0),
        };
        let alt = ctx.sign(seq, prev, other);
        let half = ctx.peers.len() / 2;
        ctx.peers
            .iter()
            .enumerate()
            .map(|(i, &to)| Send {
                to,
                bytes: if i < half {
                    record.bytes().to_vec()
                } else {
                    alt.bytes().to_vec()
                },
                delay_ms: 0,
                via: Via::Gossip,
            })
            .collect()
    }
}

/// A member's chain as a strategy rewrites it: from the first rewritten record on, every
/// record is signed again on the forged chain, and sync serves the forged records, so peers
/// see one consistent, lying chain (no equivocation to catch).
#[derive(Default)]
pub struct ForgedChain {
    /// Real record hash -> the forged record peers get instead.
    forged: BTreeMap<Hash, Record>,
    /// The forged chain's head hash, once it diverged.
    head: Option<Hash>,
}

impl ForgedChain {
    /// `record` as peers get it: with `body` in place of its own if given, and signed again if
    /// anything before it was rewritten.
    pub fn rewrite(&mut self, ctx: &Ctx<'_>, record: &Record, body: Option<Body>) -> Record {
        let (Some((_, seq, prev)), Payload::Identified(i)) =
            (record.chain_position(), record.payload())
        else {
            return record.clone();
        };
        if body.is_none() && self.head.is_none() {
            return record.clone();
        }
        let forged_prev = self.forged.get(&prev).map(Record::hash).unwrap_or(prev);
        let forged = ctx.sign(seq, forged_prev, body.unwrap_or_else(|| i.body.clone()));
        self.forged.insert(record.hash(), forged.clone());
        self.head = Some(forged.hash());
        forged
    }

    /// A sync answer with the forged records in place of the real ones.
    pub fn response(&self, response: Response) -> Response {
        match response {
            Response::Records { records } => Response::Records {
                records: records
                    .into_iter()
                    .map(|bytes| {
                        let h = bankmesh_store::record_hash(&bytes);
                        self.forged.get(&h).map_or(bytes, |r| r.bytes().to_vec())
                    })
                    .collect(),
            },
            Response::Heads { heads } => Response::Heads {
                heads: heads
                    .into_iter()
                    .map(|(a, s, h)| (a, s, self.forged.get(&h).map_or(h, Record::hash)))
                    .collect(),
            },
            other => other,
        }
    }
}

/// A proposer that tries to censor: it reports nothing, and each time it proposes it pins its
/// own empty report with the honest reports that hold the fewest submissions. It lies
/// consistently: every record after the first rewrite is signed again on its forged chain, and
/// what it serves by sync is the forged chain too.
#[derive(Default)]
pub struct CensoringProposer {
    chain: ForgedChain,
    my_report: BTreeMap<u64, Hash>,
}

impl CensoringProposer {
    fn rewrite(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Record {
        let Payload::Identified(i) = record.payload() else {
            return record.clone();
        };
        let mut body = i.body.clone();
        let changed = match &mut body {
            Body::Report { hashes, .. } => {
                // Its report lists nothing (simulated epochs fit in one part).
                hashes.clear();
                true
            }
            Body::Proposal {
                instance: Instance::Seal { epoch },
                value: Value::Seal { reports },
                valid_round,
                ..
            } => {
                let mut others: Vec<(MemberIndex, Hash, usize)> = ctx
                    .reports(*epoch)
                    .into_iter()
                    .filter(|(m, _)| *m != ctx.me)
                    .map(|(m, (h, n))| (m, h, n))
                    .collect();
                others.sort_by_key(|(_, _, n)| *n);
                let need = reports.len();
                let mut pins: Vec<(MemberIndex, Hash)> = Vec::new();
                if let Some(mine) = self.my_report.get(epoch) {
                    pins.push((ctx.me, *mine));
                }
                pins.extend(
                    others
                        .iter()
                        .map(|(m, h, _)| (*m, *h))
                        .take(need - pins.len().min(need)),
                );
                pins.sort_unstable();
                pins.truncate(need);
                *reports = pins;
                *valid_round = None;
                true
            }
            _ => false,
        };
        let forged = self.chain.rewrite(ctx, record, changed.then_some(body));
        if let Body::Report { epoch, .. } = &i.body {
            self.my_report.insert(*epoch, forged.hash());
        }
        forged
    }
}

impl Adversary for CensoringProposer {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        let out = self.rewrite(ctx, record);
        ctx.to_all(&out, 0)
    }

    fn on_response(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _to: MemberIndex,
        _request: &Request,
        response: Response,
    ) -> Response {
        self.chain.response(response)
    }
}

/// A strategy that lies in some of its own records: it picks a new body for a record, and the
/// record and all after it go out on a consistently forged chain ([`ForgedChain`]).
pub trait Rewrite {
    /// The body peers get in place of `record`'s, if it lies in this one.
    fn body(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Option<Body>;
}

/// The adversary of a [`Rewrite`] strategy.
#[derive(Default)]
pub struct Forging<R> {
    chain: ForgedChain,
    rewrite: R,
}

impl<R: Rewrite> Adversary for Forging<R> {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        let body = self.rewrite.body(ctx, record);
        let out = self.chain.rewrite(ctx, record, body);
        ctx.to_all(&out, 0)
    }

    fn on_response(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _to: MemberIndex,
        _request: &Request,
        response: Response,
    ) -> Response {
        self.chain.response(response)
    }
}

/// The body of an identified record.
fn body_of(record: &Record) -> Option<&Body> {
    match record.payload() {
        Payload::Identified(i) => Some(&i.body),
        Payload::Submission(_) => None,
    }
}

/// Deals its decryption run's first round-2 record with garbage sealed to one recipient (the
/// others get good shares). The recipient complains, revealing that one share's key; every
/// member opens it from the log, names the dealer, and the next attempt runs without it.
#[derive(Default)]
pub struct BadDealer {
    dealt: bool,
}

impl Rewrite for BadDealer {
    fn body(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Option<Body> {
        let mut b = body_of(record)?.clone();
        let Body::DkgRound2 {
            run: Run::Decryption,
            shares,
            ..
        } = &mut b
        else {
            return None;
        };
        if self.dealt {
            return None;
        }
        self.dealt = true;
        ctx.rng.fill_bytes(&mut shares.first_mut()?.ciphertext);
        Some(b)
    }
}

/// Complains about a good share: it reveals, with a valid proof, the key of the share member 1
/// dealt it in epoch 1's decryption run, in place of its done record of that run (a complaint
/// must come before it). Every member opens the share from the log, finds it good, and names
/// the complainer; with its done record missing, the setup is retried without it.
#[derive(Default)]
pub struct FalseComplainer {
    complained: bool,
}

impl FalseComplainer {
    fn complaint(ctx: &Ctx<'_>, epoch: u64) -> Option<Body> {
        let dealer: MemberIndex = if ctx.me == 1 { 2 } else { 1 };
        let attempt = 0;
        let run = Run::Decryption;
        let bytes = ctx
            .store
            .local_get(&format!("setup/{epoch:020}/secret"))
            .ok()??;
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        let secret = EpochSecret::from_bytes(Zeroizing::new(bytes));
        let seal = epoch_keys::seal_secret(&secret, ctx.consortium, epoch, run, attempt);
        let ephemeral = ctx
            .records_of(dealer)
            .iter()
            .find_map(|r| match body_of(r)? {
                Body::DkgRound2 {
                    epoch: e,
                    run: Run::Decryption,
                    attempt: 0,
                    ephemeral,
                    ..
                } if *e == epoch => Some(*ephemeral),
                _ => None,
            })?;
        let e = sealed::peer_point(&ephemeral).ok()?;
        let share_ctx = ShareContext {
            consortium: &ctx.consortium.id,
            epoch,
            run: run.label(),
            attempt,
            sender: dealer,
            recipient: ctx.me,
        };
        let (shared, proof) = sealed::reveal(&share_ctx, &seal, &e);
        Some(Body::DkgComplaint {
            epoch,
            run,
            attempt,
            dealer,
            shared: shared.compress().to_bytes(),
            proof,
        })
    }
}

impl Rewrite for FalseComplainer {
    fn body(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Option<Body> {
        let Body::DkgDone {
            epoch,
            run: Run::Decryption,
            attempt: 0,
        } = body_of(record)?
        else {
            return None;
        };
        if self.complained {
            return None;
        }
        let complaint = Self::complaint(ctx, *epoch);
        self.complained = complaint.is_some();
        complaint
    }
}

/// Posts decryption shares with a broken proof: in its first share record the first share's
/// `E_i` is moved by `G`. Every member rejects the record, one posts it as evidence in a fault
/// record, and the results come from the others' shares.
#[derive(Default)]
pub struct BadShareDecryptor {
    tampered: bool,
}

impl Rewrite for BadShareDecryptor {
    fn body(&mut self, _ctx: &mut Ctx<'_>, record: &Record) -> Option<Body> {
        let mut b = body_of(record)?.clone();
        let Body::DecryptionShares { shares, .. } = &mut b else {
            return None;
        };
        if self.tampered {
            return None;
        }
        self.tampered = true;
        shares.first_mut()?.share.e += RISTRETTO_BASEPOINT_POINT;
        Some(b)
    }
}

/// Answers OPRF requests with evaluations whose proofs cannot hold, signed with its own key so
/// that each is evidence. Its first answer tries the batch forgery of issue 6: it moves `D_0`
/// by `a*G` and `D_1` by `b*G` with `d_0*a + d_1*b = 0` under the weights as the code computes
/// them for the honest answer, and keeps the honest proof. That passes only if the weights did
/// not change with the answer; bound weights depend on every element, so they do, and finding
/// a cancellation that survives that is the k-sum search the binding makes hopeless. Later
/// answers just move `D_0` by `G`. Every requester rejects them, names it on the log, and
/// combines the other members' evaluations.
#[derive(Default)]
pub struct BadOprfEvaluator {
    answered: u32,
}

impl Adversary for BadOprfEvaluator {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        ctx.to_all(record, 0)
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        to: MemberIndex,
        request: &Request,
        response: Response,
    ) -> Response {
        let (
            Request::OprfEvaluate { blinded, .. },
            Response::OprfEvaluated {
                epoch,
                batch,
                mut evaluated,
                proof,
                ..
            },
        ) = (request, response.clone())
        else {
            return response;
        };
        let Some(pk) = ctx
            .bank
            .epoch_keys(epoch)
            .and_then(|k| k.k.verifying.get(&ctx.me).copied())
        else {
            return response;
        };
        let g = RISTRETTO_BASEPOINT_POINT;
        let forge = self.answered == 0 && evaluated.len() >= 2;
        self.answered += 1;
        if forge {
            let bctx = BatchContext {
                consortium: &ctx.consortium.id,
                epoch,
                requester: to,
                evaluator: ctx.me,
            };
            let d = oprf::bound_weights(&bctx, &pk, blinded, &evaluated);
            let a = Scalar::from(1 + u64::from(ctx.rng.next_u32()));
            if let (Some(d0), Some(d1)) = (d.first(), d.get(1)) {
                let b = -(a * d0) * d1.invert();
                if let Some(e) = evaluated.get_mut(0) {
                    *e += a * g;
                }
                if let Some(e) = evaluated.get_mut(1) {
                    *e += b * g;
                }
            }
        } else if let Some(e) = evaluated.get_mut(0) {
            *e += g;
        }
        let signature = ctx.secrets.identity().sign(&SignedEvaluation::signed_bytes(
            &ctx.consortium.id,
            epoch,
            to,
            ctx.me,
            batch,
            blinded,
            &evaluated,
            &proof,
        ));
        Response::OprfEvaluated {
            epoch,
            batch,
            evaluated,
            proof,
            signature,
        }
    }
}

/// Publishes, as an exit, an invalid submission: a copy of one of its own with the identity as
/// one-time key (which would open every share for its tag), stamped with its own key. It also
/// sends one through the relay, where the honest exit verifies it and drops it, and a bare one
/// (another one-time key) on gossip without any stamp. Every member refuses the published one,
/// and its stamp makes it evidence against the exit on the log; the bare one is refused
/// undecoded further and names the member that sent it.
#[derive(Default)]
pub struct InvalidPublisher {
    done: bool,
}

impl Adversary for InvalidPublisher {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        ctx.to_all(record, 0)
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>) -> Vec<Send> {
        if self.done {
            return Vec::new();
        }
        let Some((_, mut s)) = DoubleSubmitter::own_submissions(ctx).into_iter().next() else {
            return Vec::new();
        };
        self.done = true;
        let mut bare = s.clone();
        s.one_time = curve25519_dalek::ristretto::RistrettoPoint::default();
        let bad = Record::submission(&ctx.consortium.id, s);
        let mut out = ctx.to_all(&bad, 0);
        out.extend(DoubleSubmitter::through_relay(ctx, &bad));
        bare.one_time = curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
        let bare = Record::submission(&ctx.consortium.id, bare);
        out.extend(ctx.peers.iter().map(|&to| Send {
            to,
            bytes: bare.bytes().to_vec(),
            delay_ms: 0,
            via: Via::Gossip,
        }));
        out
    }
}

/// Floods its peers while the epoch's submissions are open, in a few bursts: junk on gossip,
/// its own records again, and onion packets past the relay's rate to one hop at a time. What it
/// sends past the bounds is dropped and counted (the relay's token bucket, the duplicate
/// check), junk names it as a fault at every member, and results stay exact.
pub struct Spammer {
    pub bursts: u32,
    pub packets_per_burst: usize,
    last: Option<Time>,
}

impl Spammer {
    pub fn new(bursts: u32, packets_per_burst: usize) -> Spammer {
        Spammer {
            bursts,
            packets_per_burst,
            last: None,
        }
    }
}

impl Adversary for Spammer {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        ctx.to_all(record, 0)
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>) -> Vec<Send> {
        let epoch = ctx.consortium.epoch_at(ctx.now);
        let open = ctx.now >= ctx.consortium.epoch_start(epoch)
            && ctx.now < ctx.consortium.submit_end(epoch);
        let spaced = self.last.is_none_or(|t| ctx.now.0 >= t.0 + 2_000);
        if self.bursts == 0 || !open || !spaced || ctx.peers.is_empty() {
            return Vec::new();
        }
        self.bursts -= 1;
        self.last = Some(ctx.now);
        let mut out = Vec::new();
        for _ in 0..10 {
            let mut junk = vec![0u8; 1 + ctx.rng.next_u32() as usize % 600];
            ctx.rng.fill_bytes(&mut junk);
            for &to in &ctx.peers {
                out.push(Send {
                    to,
                    bytes: junk.clone(),
                    delay_ms: 0,
                    via: Via::Gossip,
                });
            }
        }
        for r in ctx.records_of(ctx.me) {
            out.extend(ctx.to_all(&r, 0));
        }
        let to = ctx.peers[ctx.rng.next_u32() as usize % ctx.peers.len()];
        for _ in 0..self.packets_per_burst {
            let mut packet = vec![0u8; packet::PACKET_BYTES];
            ctx.rng.fill_bytes(&mut packet);
            out.push(Send {
                to,
                bytes: packet,
                delay_ms: 0,
                via: Via::Onion,
            });
        }
        out
    }
}

/// Posts nothing at all in the setup (no round-1 package): attempt 0 times out, and the retry
/// leaves it out, accused by timeout rather than by evidence.
pub struct SilentDealer;

impl Adversary for SilentDealer {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        if record.kind().starts_with("dkg-") {
            return Vec::new();
        }
        ctx.to_all(record, 0)
    }

    fn on_response(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _to: MemberIndex,
        _request: &Request,
        response: Response,
    ) -> Response {
        match response {
            Response::Records { records } => Response::Records {
                records: records
                    .into_iter()
                    .filter(|b| {
                        Record::from_trusted_bytes(b)
                            .map_or(true, |r| !r.kind().starts_with("dkg-"))
                    })
                    .collect(),
            },
            other => other,
        }
    }
}

/// Takes part in the DKG's first round and then withholds its round-2 records, hoping to keep
/// every attempt from completing.
pub struct WithholdingDealer;

impl Adversary for WithholdingDealer {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        if record.kind() == "dkg-round2" {
            return Vec::new();
        }
        ctx.to_all(record, 0)
    }

    fn on_response(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _to: MemberIndex,
        _request: &Request,
        response: Response,
    ) -> Response {
        // Nor does it serve them by sync.
        match response {
            Response::Records { records } => Response::Records {
                records: records
                    .into_iter()
                    .filter(|b| {
                        Record::from_trusted_bytes(b).map_or(true, |r| r.kind() != "dkg-round2")
                    })
                    .collect(),
            },
            other => other,
        }
    }
}

/// Posts more than a member may: its first submission twice (ring-signed again, so a second
/// record with the same link tag), and its third in the slot of its second (as if past its
/// quota; the real third is not published, but sync still finds it in the member's store).
/// Every member must leave all of them out.
#[derive(Default)]
pub struct DoubleSubmitter {
    /// Our own submissions met on our log, in order, with what we made of each.
    handled: Vec<Hash>,
    second_slot: Option<u32>,
}

impl DoubleSubmitter {
    fn resign(ctx: &mut Ctx<'_>, s: &Submission, slot: u32) -> Option<Record> {
        let mut s = s.clone();
        let tag = s.tag.compress().to_bytes();
        let context = RingContext {
            consortium: &ctx.consortium.id,
            epoch: s.epoch,
            tag: &tag,
        };
        let keys = ctx.bank.epoch_keys(s.epoch)?;
        let (signer, secret) = keys.ring_secret.as_ref()?;
        let key = RingKey::from_scalar(**secret);
        let message = s.ring_signed_bytes();
        s.ring = ring::sign(&context, slot, &keys.ring, *signer, &key, &message, ctx.rng).ok()?;
        Some(Record::submission(&ctx.consortium.id, s))
    }

    /// Our submissions on our log (they came back from their exits), oldest first.
    fn own_submissions(ctx: &Ctx<'_>) -> Vec<(Hash, Submission)> {
        let epoch = ctx.consortium.epoch_at(ctx.now);
        let Ok(hashes) = ctx.store.epoch_hashes(epoch) else {
            return Vec::new();
        };
        let Some((_, secret)) = ctx
            .bank
            .epoch_keys(epoch)
            .and_then(|k| k.ring_secret.as_ref())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for h in hashes {
            let Some(record) = ctx
                .store
                .get(&h)
                .ok()
                .flatten()
                .and_then(|b| Record::from_trusted_bytes(&b).ok())
            else {
                continue;
            };
            if let Payload::Submission(s) = record.payload() {
                let tag = s.tag.compress().to_bytes();
                let ours = ring::link_base(&ctx.consortium.id, s.epoch, &tag) * **secret;
                if ours.compress() == s.ring.link {
                    out.push((h, (**s).clone()));
                }
            }
        }
        out.sort_by_key(|(_, s)| s.ring.slot);
        out
    }

    /// A record sent into the relay: a path of two other members, the last its exit.
    fn through_relay(ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        let Some(path) = relay::choose_path(ctx.consortium, ctx.me, 2, &[], ctx.rng) else {
            return Vec::new();
        };
        let message = packet::Message::Record(record.bytes().to_vec());
        let Ok(bytes) = packet::build(&path, &[10, 10], &message, ctx.rng) else {
            return Vec::new();
        };
        path.first()
            .map(|h| Send {
                to: h.member,
                bytes,
                delay_ms: 0,
                via: Via::Onion,
            })
            .into_iter()
            .collect()
    }
}

impl Adversary for DoubleSubmitter {
    fn on_publish(&mut self, ctx: &mut Ctx<'_>, record: &Record) -> Vec<Send> {
        ctx.to_all(record, 0)
    }

    /// Once our own submissions are back on our log: a second post for our first tag (on
    /// gossip, under our identity), and for our third tag a post in our second's slot (through
    /// the relay, by another exit).
    fn on_tick(&mut self, ctx: &mut Ctx<'_>) -> Vec<Send> {
        let mut out = Vec::new();
        for (hash, s) in Self::own_submissions(ctx) {
            if self.handled.contains(&hash) {
                continue;
            }
            self.handled.push(hash);
            match (self.handled.len(), self.second_slot) {
                (1, _) => {
                    if let Some(again) = Self::resign(ctx, &s, s.ring.slot) {
                        out.extend(ctx.to_all(&again, 0));
                    }
                }
                (2, _) => self.second_slot = Some(s.ring.slot),
                (3, Some(slot)) => {
                    if let Some(reused) = Self::resign(ctx, &s, slot) {
                        out.extend(Self::through_relay(ctx, &reused));
                    }
                }
                _ => {}
            }
        }
        out
    }
}
