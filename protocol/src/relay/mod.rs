//! The onion relay (DESIGN 6, Loopix by Piotrowska et al. 2017): our submissions leave in
//! fixed-size Sphinx packets over random paths of other members, one packet per tick while a
//! submission window is open (a cover packet when nothing real is queued), so that what we
//! send under our identity does not depend on how many clients we have. As a hop, we hold each
//! packet for the delay its sender chose, drop replays and what a predecessor sends above the
//! genesis rate, and as an exit hand the record to the bank, which verifies it before anything
//! publishes it: the gossip source of a submission is its exit, never its origin.
//!
//! Sans-IO like the rest: time and randomness come in, packets to send come out.

pub mod packet;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

use rand_core::{CryptoRng, RngCore};

use crate::genesis::Consortium;
use crate::messages::Request;
use crate::record::Hash;
use crate::time::Time;
use crate::MemberIndex;
use packet::{Hop, Message, Opened, ReplayTag};

/// Replay tags remembered (32 bytes each); the oldest go first.
const REPLAY_CACHE_MAX: usize = 1 << 17;
/// Packets held for their delay at most; more are dropped and counted.
const POOL_MAX: usize = 8192;
/// Own records waiting for a tick at most.
const OUTBOX_MAX: usize = 1 << 20;
/// A hop's delay is drawn from an exponential distribution and cut at this many means, so that
/// a submission's latency is bounded.
const DELAY_CAP_MEANS: u64 = 5;
/// Ticks sent at once at most when the driver calls late (a stalled process does not burst).
const CATCH_UP_TICKS: u64 = 64;

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub sent_real: u64,
    pub sent_cover: u64,
    pub resent: u64,
    pub forwarded: u64,
    pub exited_real: u64,
    pub exited_cover: u64,
    pub dropped_replay: u64,
    pub dropped_rate: u64,
    pub dropped_pool: u64,
    pub dropped_invalid: u64,
}

/// What became of a packet we received.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Held for its delay: to be forwarded, or (as its exit) to be published.
    Held,
    /// Dropped and counted.
    Dropped(&'static str),
}

/// What a held packet becomes when its delay is over.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Forward {
        next: MemberIndex,
        packet: Vec<u8>,
    },
    /// A record we are the exit of: the bank verifies it before it is published.
    Exit(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    /// Reversed, so that the heap's top is the earliest.
    release: std::cmp::Reverse<Time>,
    seq: std::cmp::Reverse<u64>,
    due: Due,
}

/// One of our records that is not on our log yet: queued, or in flight until `resend_at`.
struct Own {
    epoch: u64,
    record: Vec<u8>,
    resend_at: Option<Time>,
    /// Exits it was sent by.
    exits: Vec<MemberIndex>,
}

/// A token bucket per predecessor: `rate` packets a second, bursts of up to one second's worth.
struct Bucket {
    tokens: f64,
    at: Time,
}

pub struct Relay {
    me: MemberIndex,
    replay: HashSet<ReplayTag>,
    replay_order: VecDeque<ReplayTag>,
    pool: BinaryHeap<Held>,
    held_seq: u64,
    buckets: BTreeMap<MemberIndex, Bucket>,
    /// Our records not on our log yet, by hash.
    own: HashMap<Hash, Own>,
    /// Of those, the ones to send, in order (a hash no longer in `own`, or in flight, is
    /// skipped).
    outbox: VecDeque<Hash>,
    /// Of those, the ones in flight, by when they are sent again.
    resend: BTreeSet<(Time, Hash)>,
    /// How many of `own` each epoch has.
    own_epochs: BTreeMap<u64, usize>,
    next_tick: Option<Time>,
    stats: RelayStats,
}

impl Relay {
    pub fn new(me: MemberIndex) -> Relay {
        Relay {
            me,
            replay: HashSet::new(),
            replay_order: VecDeque::new(),
            pool: BinaryHeap::new(),
            held_seq: 0,
            buckets: BTreeMap::new(),
            own: HashMap::new(),
            outbox: VecDeque::new(),
            resend: BTreeSet::new(),
            own_epochs: BTreeMap::new(),
            next_tick: None,
            stats: RelayStats::default(),
        }
    }

    pub fn stats(&self) -> RelayStats {
        self.stats
    }
    /// Own records not yet seen on the log.
    pub fn unconfirmed(&self) -> usize {
        self.own.len()
    }
    /// The epochs that own records not yet seen belong to.
    pub fn unconfirmed_epochs(&self) -> Vec<u64> {
        self.own_epochs.keys().copied().collect()
    }

    /// One of our records, to leave at a coming tick. Queued once: a record already queued or
    /// in flight is not queued again.
    pub fn queue(&mut self, epoch: u64, hash: Hash, record: Vec<u8>) {
        if self.own.contains_key(&hash) || self.own.len() >= OUTBOX_MAX {
            return;
        }
        self.own.insert(
            hash,
            Own {
                epoch,
                record,
                resend_at: None,
                exits: Vec::new(),
            },
        );
        *self.own_epochs.entry(epoch).or_default() += 1;
        self.outbox.push_back(hash);
    }

    /// A submission reached the log: if it is ours, it needs no resending. Called for every
    /// submission, so it costs one lookup for those of others.
    pub fn seen(&mut self, hash: &Hash) {
        if let Some(o) = self.own.remove(hash) {
            self.forget(hash, &o);
        }
    }

    /// Forgets what we have not got onto the log of `epoch` (its window closed).
    pub fn abandon(&mut self, epoch: u64) {
        let gone: Vec<Hash> = self
            .own
            .iter()
            .filter(|(_, o)| o.epoch == epoch)
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            if let Some(o) = self.own.remove(&h) {
                self.forget(&h, &o);
            }
        }
    }

    fn forget(&mut self, hash: &Hash, o: &Own) {
        if let Some(t) = o.resend_at {
            self.resend.remove(&(t, *hash));
        }
        if let Some(n) = self.own_epochs.get_mut(&o.epoch) {
            *n -= 1;
            if *n == 0 {
                self.own_epochs.remove(&o.epoch);
            }
        }
    }

    /// A packet from `from`: rate-limited, checked against replays, then held for its delay
    /// (the sender's choice as a hop; our own draw as its exit).
    pub fn receive(
        &mut self,
        c: &Consortium,
        now: Time,
        from: MemberIndex,
        bytes: &[u8],
        key: &x25519_sphinx::StaticSecret,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Received {
        if !self.admit(c, now, from) {
            self.stats.dropped_rate += 1;
            return Received::Dropped("over the relay rate");
        }
        let (tag, opened) = match packet::open(bytes, key) {
            Ok(o) => o,
            Err(_) => {
                self.stats.dropped_invalid += 1;
                return Received::Dropped("invalid packet");
            }
        };
        if !self.remember(tag) {
            self.stats.dropped_replay += 1;
            return Received::Dropped("replayed packet");
        }
        let mean = c.genesis.privacy.mix_delay_ms;
        let (delay_ms, due) = match opened {
            Opened::Forward {
                next,
                delay_ms,
                packet,
            } => {
                if !c.is_member(next) || next == self.me || next == from {
                    self.stats.dropped_invalid += 1;
                    return Received::Dropped("bad next hop");
                }
                (delay_ms, Due::Forward { next, packet })
            }
            Opened::Exit(Message::Cover) => {
                self.stats.exited_cover += 1;
                return Received::Dropped("cover");
            }
            Opened::Exit(Message::Record(record)) => (exponential_ms(mean, rng), Due::Exit(record)),
        };
        if self.pool.len() >= POOL_MAX {
            self.stats.dropped_pool += 1;
            return Received::Dropped("relay pool full");
        }
        self.held_seq += 1;
        self.pool.push(Held {
            release: std::cmp::Reverse(now.plus(delay_ms.min(mean * DELAY_CAP_MEANS))),
            seq: std::cmp::Reverse(self.held_seq),
            due,
        });
        Received::Held
    }

    fn admit(&mut self, c: &Consortium, now: Time, from: MemberIndex) -> bool {
        let rate = f64::from(c.genesis.privacy.relay_rate);
        let b = self.buckets.entry(from).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.0.saturating_sub(b.at.0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = b.at.max(now);
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// Whether `tag` is new (and remembers it).
    fn remember(&mut self, tag: ReplayTag) -> bool {
        if !self.replay.insert(tag) {
            return false;
        }
        self.replay_order.push_back(tag);
        if self.replay_order.len() > REPLAY_CACHE_MAX {
            if let Some(old) = self.replay_order.pop_front() {
                self.replay.remove(&old);
            }
        }
        true
    }

    /// What is due: held packets whose delay is over (packets to forward, and records we are
    /// the exit of, for the bank to verify and publish), then one packet per tick while
    /// `sending` (a submission window is open here), real if one is queued, else cover.
    pub fn poll(
        &mut self,
        c: &Consortium,
        now: Time,
        sending: bool,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (Vec<(MemberIndex, Request)>, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let mut exits = Vec::new();
        while self.pool.peek().is_some_and(|h| h.release.0 <= now) {
            let Some(h) = self.pool.pop() else { break };
            match h.due {
                Due::Forward { next, packet } => {
                    self.stats.forwarded += 1;
                    out.push((next, Request::Onion { packet }));
                }
                Due::Exit(record) => {
                    self.stats.exited_real += 1;
                    exits.push(record);
                }
            }
        }
        self.requeue_unseen(now);
        if !sending {
            self.next_tick = None;
            return (out, exits);
        }
        let tick_ms = c.genesis.privacy.packet_ms.max(1);
        let mut next = *self.next_tick.get_or_insert(now);
        let mut sent = 0;
        while next <= now && sent < CATCH_UP_TICKS {
            if let Some(p) = self.tick(c, now, rng) {
                out.push(p);
            }
            next = next.plus(tick_ms);
            sent += 1;
        }
        if next <= now {
            next = now.plus(tick_ms);
        }
        self.next_tick = Some(next);
        (out, exits)
    }

    /// Records sent but not on the log by their time go back to the front of the queue, to
    /// leave by another exit.
    fn requeue_unseen(&mut self, now: Time) {
        while let Some(&(t, h)) = self.resend.first().filter(|(t, _)| *t <= now) {
            self.resend.remove(&(t, h));
            if let Some(o) = self.own.get_mut(&h) {
                o.resend_at = None;
                self.stats.resent += 1;
                self.outbox.push_front(h);
            }
        }
    }

    /// The next record to send: the first queued one that is still ours and not in flight.
    fn next_real(&mut self) -> Option<Hash> {
        while let Some(h) = self.outbox.pop_front() {
            if self.own.get(&h).is_some_and(|o| o.resend_at.is_none()) {
                return Some(h);
            }
        }
        None
    }

    fn tick(
        &mut self,
        c: &Consortium,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<(MemberIndex, Request)> {
        let p = &c.genesis.privacy;
        let real = self.next_real();
        let own = real.and_then(|h| self.own.get(&h));
        let avoid: &[MemberIndex] = own.map_or(&[], |o| o.exits.as_slice());
        let message = match own {
            Some(o) => Message::Record(o.record.clone()),
            None => Message::Cover,
        };
        let built = choose_path(c, self.me, usize::from(p.hops), avoid, rng).and_then(|path| {
            let delays: Vec<u64> = path
                .iter()
                .map(|_| exponential_ms(p.mix_delay_ms, rng))
                .collect();
            let bytes = packet::build(&path, &delays, &message, rng).ok()?;
            Some((path.first()?.member, path.last()?.member, bytes))
        });
        let Some((first, exit, bytes)) = built else {
            // Kept for the next tick (this cannot happen with a valid genesis).
            if let Some(h) = real {
                self.outbox.push_front(h);
            }
            return None;
        };
        match real.and_then(|h| Some((h, self.own.get_mut(&h)?))) {
            Some((hash, o)) => {
                self.stats.sent_real += 1;
                o.exits.push(exit);
                // The longest a path can take, then a margin for the network and the log.
                let worst = p.mix_delay_ms * DELAY_CAP_MEANS * u64::from(p.hops);
                let at = now.plus(worst + RESEND_MARGIN_MS);
                o.resend_at = Some(at);
                self.resend.insert((at, hash));
            }
            None => self.stats.sent_cover += 1,
        }
        Some((first, Request::Onion { packet: bytes }))
    }

    /// When [`Relay::poll`] has something to do.
    pub fn next_wake(&self, sending: bool) -> Option<Time> {
        let held = self.pool.peek().map(|h| h.release.0);
        let resend = self.resend.first().map(|(t, _)| *t);
        let tick = if sending {
            Some(self.next_tick.unwrap_or(Time(0)))
        } else {
            None
        };
        [held, resend, tick].into_iter().flatten().min()
    }
}

/// Time a record may take from its tick to the log beyond the path's delays.
const RESEND_MARGIN_MS: u64 = 3_000;

/// A path of `hops` distinct members other than us, uniformly at random. The exit is drawn
/// first, from those not in `avoid` (exits tried before) while any is left.
pub fn choose_path(
    c: &Consortium,
    me: MemberIndex,
    hops: usize,
    avoid: &[MemberIndex],
    rng: &mut (impl RngCore + CryptoRng),
) -> Option<Vec<Hop>> {
    let mut others: Vec<MemberIndex> = c.indices().filter(|&m| m != me).collect();
    if hops == 0 || others.len() < hops {
        return None;
    }
    let fresh: Vec<MemberIndex> = others
        .iter()
        .copied()
        .filter(|m| !avoid.contains(m))
        .collect();
    let pick_from = if fresh.is_empty() { &others } else { &fresh };
    let exit = *pick_from.get(uniform(rng, pick_from.len() as u64) as usize)?;
    others.retain(|&m| m != exit);
    // The hops before the exit: a uniform choice in order (partial Fisher-Yates).
    let mut path = Vec::with_capacity(hops);
    for i in 0..hops - 1 {
        let j = i + uniform(rng, (others.len() - i) as u64) as usize;
        others.swap(i, j);
        path.push(*others.get(i)?);
    }
    path.push(exit);
    path.into_iter()
        .map(|m| {
            Some(Hop {
                member: m,
                key: c.x25519(m)?.to_bytes(),
            })
        })
        .collect()
}

/// A uniform integer below `n` (rejection sampling).
fn uniform(rng: &mut impl RngCore, n: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % n;
        }
    }
}

/// An exponential delay with mean `mean_ms`, cut at [`DELAY_CAP_MEANS`] means.
fn exponential_ms(mean_ms: u64, rng: &mut impl RngCore) -> u64 {
    if mean_ms == 0 {
        return 0;
    }
    // A uniform in (0, 1]: 53 random bits.
    let u = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let d = -(mean_ms as f64) * u.ln();
    (d as u64).min(mean_ms * DELAY_CAP_MEANS)
}

#[cfg(test)]
mod tests;
