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

use std::num::NonZeroU32;

use bankmesh_protocol::messages::Request;
use bankmesh_protocol::MemberIndex;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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

/// OPRF requests a second per member, and the burst allowed.
const OPRF_PER_SECOND: u32 = 50;
const OPRF_BURST: u32 = 200;
/// Sync requests a second per member, and the burst allowed.
const SYNC_PER_SECOND: u32 = 200;
const SYNC_BURST: u32 = 800;

pub struct Throttle {
    oprf: DefaultKeyedRateLimiter<MemberIndex>,
    sync: DefaultKeyedRateLimiter<MemberIndex>,
    onion: DefaultKeyedRateLimiter<MemberIndex>,
    /// Answers one member may hold open here at once.
    open_per_member: usize,
}

impl Throttle {
    /// `relay_rate` is the genesis rate of onion packets a second per predecessor: the node
    /// lets twice that through (bursts of two seconds' worth), so the relay's own finer bucket
    /// still decides, and only a flood is cut here. `open_max` open answers are shared out
    /// evenly over the `members`.
    pub fn new(relay_rate: u32, members: usize, open_max: usize) -> Throttle {
        let onion = relay_rate.saturating_mul(2).max(1);
        Throttle {
            oprf: RateLimiter::keyed(quota(OPRF_PER_SECOND, OPRF_BURST)),
            sync: RateLimiter::keyed(quota(SYNC_PER_SECOND, SYNC_BURST)),
            onion: RateLimiter::keyed(quota(onion, onion.saturating_mul(2))),
            open_per_member: (open_max / members.max(1)).max(1),
        }
    }

    /// Whether `from` may send one more request of `class` now.
    pub fn admit(&self, from: MemberIndex, class: Class) -> bool {
        let limiter = match class {
            Class::Oprf => &self.oprf,
            Class::Sync => &self.sync,
            Class::Onion => &self.onion,
        };
        limiter.check_key(&from).is_ok()
    }

    /// Whether `from`, holding `open` answers here already, may open one more.
    pub fn may_open(&self, open: usize) -> bool {
        open < self.open_per_member
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

    #[test]
    fn a_flooding_member_is_cut_at_its_burst_and_others_are_not() {
        let t = Throttle::new(100, 5, 4096);
        let admitted = (0..10_000).filter(|_| t.admit(2, Class::Sync)).count();
        // The burst, plus what refills while the loop runs (well under a second).
        assert!(
            (SYNC_BURST as usize..SYNC_BURST as usize + 200).contains(&admitted),
            "{admitted}"
        );
        assert!(
            t.admit(3, Class::Sync),
            "another member keeps its own bucket"
        );
        assert!(t.admit(2, Class::Oprf), "and another class its own");
        let onion = (0..10_000).filter(|_| t.admit(4, Class::Onion)).count();
        assert!((400..600).contains(&onion), "{onion}");
    }

    #[test]
    fn open_answers_are_shared_out_over_the_members() {
        let t = Throttle::new(100, 5, 4096);
        assert!(t.may_open(0));
        assert!(t.may_open(818));
        assert!(!t.may_open(819));
        assert!(Throttle::new(100, 0, 0).may_open(0), "never zero");
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
