//! Per-member throttling of direct requests (issue 6): what one member sends can neither fill
//! the protocol thread's queue nor hold every open answer, so it cannot starve the others.
//!
//! Each request class has a keyed token bucket (governor's GCRA) per member; a request over
//! its member's rate is dropped before it is queued, its stream closed, and counted in
//! `bankmesh_throttled_total{member,class}`. The requester sees a failed request and asks again
//! later, as after any loss. The rates sit well above what an honest member sends, so they
//! bound a flood, not a busy peer; the protocol keeps its own finer bounds (the relay's rate per
//! predecessor, the OPRF quota on the log), which a throttled request never reaches.
//!
//! Gossip is not throttled here: gossipsub bounds its own queues, the protocol thread's queue
//! is bounded (a full queue leaves a message unvalidated, so unforwarded, and anti-entropy
//! brings it back), and a member whose messages fail validation loses peer score.

use std::collections::HashMap;
use std::num::NonZeroU32;

use bankmesh_protocol::messages::Request;
use bankmesh_protocol::MemberIndex;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// The kinds of direct request, each with its own rate per member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// OPRF evaluations: an honest member asks each holder once per batch, and again only
    /// after a pause.
    Oprf,
    /// Catch-up: heads, author ranges, submission lists, records by hash.
    Sync,
    /// Onion packets: up to every member's packets through one predecessor.
    Onion,
}

impl Class {
    pub fn of(request: &Request) -> Class {
        match request {
            Request::OprfEvaluate { .. } => Class::Oprf,
            Request::Onion { .. } => Class::Onion,
            Request::Submissions { .. }
            | Request::Records { .. }
            | Request::Heads
            | Request::AuthorRange { .. } => Class::Sync,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Oprf => "oprf",
            Class::Sync => "sync",
            Class::Onion => "onion",
        }
    }
}

/// OPRF requests a second per member, and the burst allowed: a bank at the full quota asks
/// each evaluator up to 98 batches, and again after a refusal, so the burst covers twice that.
const OPRF_PER_SECOND: u32 = 50;
const OPRF_BURST: u32 = 400;
/// Sync requests a second per member, and the burst allowed.
const SYNC_PER_SECOND: u32 = 200;
const SYNC_BURST: u32 = 800;

type Limiter<C> = RateLimiter<
    MemberIndex,
    DefaultKeyedStateStore<MemberIndex>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

pub struct Throttle<C: Clock = DefaultClock> {
    oprf: Limiter<C>,
    sync: Limiter<C>,
    onion: Limiter<C>,
    /// Answers one member may hold open here at once.
    open_per_member: usize,
    /// Answers each member holds open now.
    open: HashMap<MemberIndex, usize>,
}

impl Throttle {
    /// `relay_rate` is the genesis rate of onion packets a second per predecessor: the node
    /// lets twice that through (bursts of two seconds' worth), so the relay's own finer bucket
    /// still decides, and only a flood is cut here. `open_max` open answers are shared out
    /// evenly over the `members`.
    pub fn new(relay_rate: u32, members: usize, open_max: usize) -> Throttle {
        Throttle::with_clock(relay_rate, members, open_max, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Throttle<C> {
    pub fn with_clock(relay_rate: u32, members: usize, open_max: usize, clock: C) -> Throttle<C> {
        let onion = relay_rate.saturating_mul(2).max(1);
        let limiter = |q| RateLimiter::dashmap_with_clock(q, clock.clone());
        Throttle {
            oprf: limiter(quota(OPRF_PER_SECOND, OPRF_BURST)),
            sync: limiter(quota(SYNC_PER_SECOND, SYNC_BURST)),
            onion: limiter(quota(onion, onion.saturating_mul(2))),
            open_per_member: (open_max / members.max(1)).max(1),
            open: HashMap::new(),
        }
    }

    /// Whether `from` may have one more request of `class` answered now: within its share of
    /// open answers (checked first, so a refused request spends no rate), then its rate. An
    /// admitted request holds one open answer until [`Throttle::closed`].
    pub fn admit(&mut self, from: MemberIndex, class: Class) -> bool {
        let open = self.open.entry(from).or_default();
        if *open >= self.open_per_member {
            return false;
        }
        let limiter = match class {
            Class::Oprf => &self.oprf,
            Class::Sync => &self.sync,
            Class::Onion => &self.onion,
        };
        if limiter.check_key(&from).is_err() {
            return false;
        }
        *open += 1;
        true
    }

    /// One of `from`'s open answers was sent or abandoned.
    pub fn closed(&mut self, from: MemberIndex) {
        if let Some(open) = self.open.get_mut(&from) {
            *open = open.saturating_sub(1);
        }
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(per_second).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn throttle() -> (Throttle<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Throttle::with_clock(100, 5, 4096, clock.clone()), clock)
    }

    /// Admits and closes at once (no open answers held), `n` times.
    fn admitted(
        t: &mut Throttle<FakeRelativeClock>,
        m: MemberIndex,
        class: Class,
        n: usize,
    ) -> usize {
        (0..n)
            .filter(|_| {
                let ok = t.admit(m, class);
                if ok {
                    t.closed(m);
                }
                ok
            })
            .count()
    }

    #[test]
    fn a_flooding_member_is_cut_at_its_burst_then_its_rate() {
        let (mut t, clock) = throttle();
        assert_eq!(
            admitted(&mut t, 2, Class::Sync, 10_000),
            SYNC_BURST as usize
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            admitted(&mut t, 2, Class::Sync, 10_000),
            SYNC_PER_SECOND as usize
        );
        // Another member keeps its own bucket, and another class its own.
        assert_eq!(
            admitted(&mut t, 3, Class::Sync, 10_000),
            SYNC_BURST as usize
        );
        assert_eq!(
            admitted(&mut t, 2, Class::Oprf, 10_000),
            OPRF_BURST as usize
        );
        // Onion packets: twice the relay rate, bursts of two seconds' worth.
        assert_eq!(admitted(&mut t, 4, Class::Onion, 10_000), 400);
    }

    #[test]
    fn open_answers_are_shared_out_over_the_members() {
        let (mut t, clock) = throttle();
        let mut held = 0;
        for _ in 0..2_000 {
            clock.advance(Duration::from_millis(10));
            held += usize::from(t.admit(2, Class::Onion));
        }
        assert_eq!(held, 4096 / 5, "one member holds at most its share");
        assert!(t.admit(3, Class::Onion), "others still get theirs");
        t.closed(2);
        assert!(t.admit(2, Class::Onion), "a closed answer frees a place");
        let mut lone = Throttle::with_clock(100, 0, 0, FakeRelativeClock::default());
        assert!(lone.admit(1, Class::Sync), "never a share of zero");
    }

    #[test]
    fn every_request_has_a_class() {
        assert_eq!(Class::of(&Request::Heads), Class::Sync);
        assert_eq!(Class::of(&Request::Onion { packet: vec![] }), Class::Onion);
        assert_eq!(
            Class::of(&Request::OprfEvaluate {
                epoch: 1,
                batch: 0,
                blinded: vec![]
            })
            .name(),
            "oprf"
        );
    }
}
