//! The simulated network (STYLE 7): per-link latency distributions, loss and duplication of
//! gossip and of direct messages, and partitions (one- or two-way) that heal or do not. Every
//! draw comes from the simulation's seeded generator.

use std::collections::BTreeMap;

use bankmesh_protocol::MemberIndex;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

/// What kind of traffic a message is (loss can differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    Gossip,
    Direct,
}

/// A cut between two groups of members over a time span (virtual ms, absolute).
#[derive(Clone, Debug)]
pub struct Partition {
    pub from_ms: u64,
    /// `None`: never heals.
    pub until_ms: Option<u64>,
    pub side_a: Vec<MemberIndex>,
    /// Everybody not in `side_a` is on the other side.
    /// `true`: only messages from side A to the rest are cut (a one-way partition).
    pub one_way: bool,
}

impl Partition {
    fn cuts(&self, now: u64, from: MemberIndex, to: MemberIndex) -> bool {
        if now < self.from_ms || self.until_ms.is_some_and(|u| now >= u) {
            return false;
        }
        let (a_from, a_to) = (self.side_a.contains(&from), self.side_a.contains(&to));
        if a_from == a_to {
            return false;
        }
        !self.one_way || a_from
    }
}

#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Each link draws its own latency range within these bounds (ms): a base in
    /// `base_ms` and a spread up to `spread_ms` on top.
    pub base_ms: (u64, u64),
    pub spread_ms: u64,
    /// A message is late with this probability (per mille) by up to `tail_ms` more.
    pub tail_permille: u32,
    pub tail_ms: u64,
    pub gossip_loss_permille: u32,
    pub direct_loss_permille: u32,
    pub duplicate_permille: u32,
    pub partitions: Vec<Partition>,
    /// Members whose every message is late by a delay drawn in this range (ms): a slow
    /// machine or link.
    pub slow: BTreeMap<MemberIndex, (u64, u64)>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            base_ms: (5, 40),
            spread_ms: 60,
            tail_permille: 20,
            tail_ms: 400,
            gossip_loss_permille: 0,
            direct_loss_permille: 0,
            duplicate_permille: 10,
            partitions: Vec::new(),
            slow: BTreeMap::new(),
        }
    }
}

pub struct Network {
    config: NetConfig,
    links: BTreeMap<(MemberIndex, MemberIndex), (u64, u64)>,
    rng: ChaCha20Rng,
    pub dropped: u64,
    pub duplicated: u64,
    pub cut: u64,
}

impl Network {
    pub fn new(config: NetConfig, members: &[MemberIndex], mut rng: ChaCha20Rng) -> Network {
        let mut links = BTreeMap::new();
        let (lo, hi) = config.base_ms;
        for &a in members {
            for &b in members {
                let base = lo + rng.next_u64() % (hi.saturating_sub(lo) + 1);
                let spread = rng.next_u64() % (config.spread_ms + 1);
                links.insert((a, b), (base, base + spread));
            }
        }
        Network {
            config,
            links,
            rng,
            dropped: 0,
            duplicated: 0,
            cut: 0,
        }
    }

    fn latency(&mut self, from: MemberIndex, to: MemberIndex) -> u64 {
        let (lo, hi) = self.links.get(&(from, to)).copied().unwrap_or((10, 50));
        let mut d = lo + self.rng.next_u64() % (hi - lo + 1);
        if self.rng.next_u32() % 1000 < self.config.tail_permille {
            d += self.rng.next_u64() % (self.config.tail_ms + 1);
        }
        if let Some(&(lo, hi)) = self.config.slow.get(&from) {
            d += lo + self.rng.next_u64() % (hi.saturating_sub(lo) + 1);
        }
        d
    }

    /// The delays at which copies of a message from `from` to `to` sent at `now` arrive: none
    /// if lost or cut, two if duplicated.
    pub fn deliveries(
        &mut self,
        now: u64,
        from: MemberIndex,
        to: MemberIndex,
        traffic: Traffic,
    ) -> Vec<u64> {
        if self.config.partitions.iter().any(|p| p.cuts(now, from, to)) {
            self.cut += 1;
            return Vec::new();
        }
        let loss = match traffic {
            Traffic::Gossip => self.config.gossip_loss_permille,
            Traffic::Direct => self.config.direct_loss_permille,
        };
        if self.rng.next_u32() % 1000 < loss {
            self.dropped += 1;
            return Vec::new();
        }
        let mut out = vec![self.latency(from, to)];
        if self.rng.next_u32() % 1000 < self.config.duplicate_permille {
            self.duplicated += 1;
            out.push(self.latency(from, to) + 50);
        }
        out
    }

    /// Whether `from` and `to` can reach each other at `now` (both ways).
    pub fn connected(&self, now: u64, a: MemberIndex, b: MemberIndex) -> bool {
        !self
            .config
            .partitions
            .iter()
            .any(|p| p.cuts(now, a, b) || p.cuts(now, b, a))
    }

    /// When the last partition heals (`None` if one never does).
    pub fn healed_at(&self) -> Option<u64> {
        self.config
            .partitions
            .iter()
            .map(|p| p.until_ms)
            .try_fold(0, |acc, u| u.map(|u| acc.max(u)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn partitions_cut_what_they_say_and_heal() {
        let p = Partition {
            from_ms: 10,
            until_ms: Some(20),
            side_a: vec![1, 2],
            one_way: false,
        };
        assert!(!p.cuts(5, 1, 3), "before");
        assert!(p.cuts(10, 1, 3) && p.cuts(15, 3, 2), "both ways");
        assert!(!p.cuts(15, 1, 2) && !p.cuts(15, 3, 4), "within a side");
        assert!(!p.cuts(20, 1, 3), "healed");
        let one = Partition { one_way: true, ..p };
        assert!(one.cuts(15, 1, 3) && !one.cuts(15, 3, 1));
    }

    #[test]
    fn loss_and_duplication_follow_their_rates() {
        let config = NetConfig {
            gossip_loss_permille: 200,
            duplicate_permille: 100,
            ..NetConfig::default()
        };
        let mut net = Network::new(config, &[1, 2], ChaCha20Rng::seed_from_u64(1));
        let mut copies = 0;
        for _ in 0..10_000 {
            copies += net.deliveries(0, 1, 2, Traffic::Gossip).len();
        }
        assert!((1_900..2_100).contains(&net.dropped), "{}", net.dropped);
        assert!((700..900).contains(&net.duplicated), "{}", net.duplicated);
        assert_eq!(copies as u64, 10_000 - net.dropped + net.duplicated);
        assert!(
            !net.deliveries(0, 1, 2, Traffic::Direct).is_empty(),
            "no direct loss set"
        );
    }
}
