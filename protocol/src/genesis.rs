//! The consortium genesis (`consortium.toml`, DESIGN 2): parameters, members and their public
//! keys. Its canonical hash is the consortium id, bound into every signature, transcript and
//! record hash.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Time;
use crate::{MemberIndex, MAX_MEMBERS, SCORE_MAX};

/// Consortium id: SHA-256 of the canonical genesis encoding.
pub type ConsortiumId = [u8; 32];

/// The genesis file as every member and auditor holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub name: String,
    /// Format version of this file and of the records it governs.
    pub version: u16,
    /// Decryption threshold `t`: any `t` members can decrypt, `t - 1` learn nothing.
    pub threshold: u16,
    /// Seal quorum `q`: cosignatures that certify an epoch's record set.
    pub seal_quorum: u16,
    /// Largest score; fixed at 1023 by the range proof.
    pub score_max: u16,
    /// OPRF evaluations one member serves another per epoch (DESIGN 4.2 rate limit).
    pub oprf_quota: u32,
    pub timing: Timing,
    /// The onion relay and traffic shaping (DESIGN 6); defaults if absent.
    #[serde(default)]
    pub privacy: Privacy,
    pub members: Vec<MemberInfo>,
}

/// How submissions travel (DESIGN 6): paths, delays, the constant packet rate and its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// Members on each submission's path, the origin not counted (the last is the exit).
    pub hops: u8,
    /// Mean of the exponential delay each hop holds a packet (Loopix), in milliseconds.
    pub mix_delay_ms: u64,
    /// While a submission window is open, every member sends one packet this often: its next
    /// submission if one is queued, a cover packet otherwise.
    pub packet_ms: u64,
    /// Packets a second one relay takes from one predecessor; more are dropped and counted.
    pub relay_rate: u32,
    /// OPRF requests are padded to a multiple of this many elements, so that evaluators learn
    /// a bank's number of clients only to this bucket (padding counts against `oprf_quota`).
    pub client_bucket: u32,
    /// Output control (DESIGN 6): no decryption share is produced for a tag with fewer
    /// submissions than this, and its holders see the result as withheld, with its count.
    /// With 3, a bank alone never reads another's score off a two-holder average; a holder
    /// with `min_count - 2` accomplices that probe the OPRF and post known scores still can.
    pub min_count: u16,
}

impl Default for Privacy {
    fn default() -> Privacy {
        Privacy {
            hops: 2,
            mix_delay_ms: 50,
            packet_ms: 10,
            relay_rate: 1000,
            client_bucket: 256,
            min_count: 1,
        }
    }
}

/// Absolute schedule, in milliseconds (DESIGN 8: deadlines are absolute). Fields added after
/// version 1 have defaults, so an older `consortium.toml` keeps working.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Unix time (ms) at which the DKG starts.
    pub start_ms: u64,
    /// Each epoch's setup (both DKG runs, fresh keys, retried without absent members if need
    /// be) runs in the `dkg_ms` before the epoch starts: epoch 1's from `start_ms`, each later
    /// one during the epoch before. At most `epoch_ms`.
    pub dkg_ms: u64,
    /// Time between the starts of two epochs. An epoch's seal and decryption may overlap the
    /// next epoch's submission window.
    pub epoch_ms: u64,
    /// Submission window from the epoch's start (it closes early once every member is ready).
    pub submit_ms: u64,
    /// Seal window after the submission window.
    pub seal_ms: u64,
    /// Decryption window after the seal window.
    pub decrypt_ms: u64,
    /// Length of one DKG attempt; an attempt that has not completed by then is retried
    /// without the members that posted nothing. 0: a third of `dkg_ms`.
    #[serde(default)]
    pub dkg_attempt_ms: u64,
    /// Base timeout of one agreement round (the seal's and the setup's); later rounds wait
    /// longer.
    #[serde(default = "default_round_ms")]
    pub round_ms: u64,
    /// Largest difference between a member's clock and true time that the schedule allows
    /// for: members report their submissions this long after the submission deadline.
    #[serde(default = "default_clock_skew_ms")]
    pub clock_skew_ms: u64,
}

fn default_round_ms() -> u64 {
    2_000
}
fn default_clock_skew_ms() -> u64 {
    1_000
}

impl Timing {
    /// A schedule with the given windows and the defaults for everything else.
    pub fn new(
        start_ms: u64,
        dkg_ms: u64,
        epoch_ms: u64,
        submit_ms: u64,
        seal_ms: u64,
        decrypt_ms: u64,
    ) -> Timing {
        Timing {
            start_ms,
            dkg_ms,
            epoch_ms,
            submit_ms,
            seal_ms,
            decrypt_ms,
            dkg_attempt_ms: 0,
            round_ms: default_round_ms(),
            clock_skew_ms: default_clock_skew_ms(),
        }
    }
}

/// One member's public description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberInfo {
    pub index: MemberIndex,
    pub name: String,
    /// ed25519 identity key (also the libp2p PeerId), hex.
    #[serde(with = "hex32")]
    pub identity: [u8; 32],
    /// x25519 key for DKG share encryption and onion layers, hex.
    #[serde(with = "hex32")]
    pub x25519: [u8; 32],
    /// ristretto255 ring-signature key, hex.
    #[serde(with = "hex32")]
    pub ring: [u8; 32],
    /// libp2p multiaddresses the member listens on.
    pub addrs: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenesisError {
    #[error("consortium.toml does not parse: {0}")]
    Parse(String),
    #[error("invalid consortium: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> GenesisError {
    GenesisError::Invalid(msg.into())
}

/// Default seal quorum: floor(2n/3) + 1.
pub fn default_seal_quorum(n: usize) -> u16 {
    u16::try_from(2 * n / 3 + 1).unwrap_or(u16::MAX)
}

/// Faulty members a consortium of `n` tolerates: the largest `f` with `n >= 3f + 1`.
pub fn faulty(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// OPRF evaluations one member serves another per epoch unless the genesis says otherwise.
pub const DEFAULT_OPRF_QUOTA: u32 = 100_000;

impl Genesis {
    /// A version-1 genesis with the default seal quorum (floor(2n/3) + 1) and OPRF quota.
    pub fn new(name: &str, threshold: u16, timing: Timing, members: Vec<MemberInfo>) -> Genesis {
        Genesis {
            name: name.to_string(),
            version: 1,
            threshold,
            seal_quorum: default_seal_quorum(members.len()),
            score_max: SCORE_MAX,
            oprf_quota: DEFAULT_OPRF_QUOTA,
            timing,
            privacy: Privacy::default(),
            members,
        }
    }

    pub fn from_toml(text: &str) -> Result<Genesis, GenesisError> {
        let g: Genesis = toml::from_str(text).map_err(|e| GenesisError::Parse(e.to_string()))?;
        g.validate()?;
        Ok(g)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every parameter and key; a genesis that passes can be used by [`Consortium::new`].
    pub fn validate(&self) -> Result<(), GenesisError> {
        let n = self.members.len();
        if !(2..=MAX_MEMBERS).contains(&n) {
            return Err(invalid(format!("{n} members; need 2..={MAX_MEMBERS}")));
        }
        if self.version != 1 {
            return Err(invalid(format!("unsupported version {}", self.version)));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("empty consortium name"));
        }
        let t = usize::from(self.threshold);
        if !(2..=n).contains(&t) {
            return Err(invalid(format!("threshold {t} must be in 2..={n}")));
        }
        // Two quorums must share an honest member whatever f = floor((n-1)/3) members do, and
        // the honest members alone must make a quorum (DESIGN 4.4).
        let q = usize::from(self.seal_quorum);
        let q_min = usize::from(default_seal_quorum(n));
        let q_max = n - faulty(n);
        if q < q_min || q > q_max {
            return Err(invalid(format!(
                "seal quorum {q} must be in {q_min}..={q_max}"
            )));
        }
        if self.score_max != SCORE_MAX {
            return Err(invalid(format!("score_max must be {SCORE_MAX}")));
        }
        if self.oprf_quota == 0 {
            return Err(invalid("oprf_quota must be positive"));
        }
        let p = &self.privacy;
        if p.hops < 2 || usize::from(p.hops) > crate::relay::packet::MAX_HOPS.min(n - 1) {
            return Err(invalid(format!(
                "privacy.hops {} must be at least 2 and at most {} (other members, Sphinx limit)",
                p.hops,
                crate::relay::packet::MAX_HOPS.min(n - 1)
            )));
        }
        if p.packet_ms == 0 || p.relay_rate == 0 {
            return Err(invalid(
                "privacy.packet_ms and privacy.relay_rate must be positive",
            ));
        }
        if p.client_bucket == 0 || p.client_bucket > self.oprf_quota {
            return Err(invalid(format!(
                "privacy.client_bucket {} must be in 1..=oprf_quota ({})",
                p.client_bucket, self.oprf_quota
            )));
        }
        if p.min_count == 0 || usize::from(p.min_count) > n {
            return Err(invalid(format!(
                "privacy.min_count {} must be in 1..={n}",
                p.min_count
            )));
        }
        if p.mix_delay_ms > 60_000 {
            return Err(invalid("privacy.mix_delay_ms must be at most 60000"));
        }
        let tm = &self.timing;
        if tm.dkg_ms == 0 || tm.submit_ms == 0 || tm.seal_ms == 0 || tm.decrypt_ms == 0 {
            return Err(invalid("timing windows must be positive"));
        }
        if tm.submit_ms > tm.epoch_ms {
            return Err(invalid("the submission window exceeds epoch_ms"));
        }
        if tm.round_ms == 0 {
            return Err(invalid("round_ms must be positive"));
        }
        if tm.dkg_ms > tm.epoch_ms {
            return Err(invalid(
                "dkg_ms exceeds epoch_ms (each epoch's setup runs during the epoch before)",
            ));
        }
        if tm.dkg_attempt_ms > tm.dkg_ms {
            return Err(invalid("dkg_attempt_ms exceeds dkg_ms"));
        }
        // The seal needs time to report, then f + 1 agreement rounds (one of them has an
        // honest proposer), each of three timeouts of round_ms * (1 + r/2) (DESIGN 4.4).
        let rounds: u64 = (0..=faulty(n) as u64)
            .map(|r| {
                3 * (tm
                    .round_ms
                    .saturating_add(tm.round_ms.saturating_mul(r) / 2))
            })
            .sum();
        let seal_needs = tm.clock_skew_ms.saturating_add(rounds);
        if tm.seal_ms < seal_needs {
            return Err(invalid(format!(
                "seal_ms must be at least clock_skew_ms plus f + 1 agreement rounds ({seal_needs})"
            )));
        }
        for (pos, m) in self.members.iter().enumerate() {
            if usize::from(m.index) != pos + 1 {
                return Err(invalid(format!(
                    "member #{} has index {}; indices must be 1..=n in order",
                    pos + 1,
                    m.index
                )));
            }
            if m.name.trim().is_empty() {
                return Err(invalid(format!("member {} has an empty name", m.index)));
            }
            VerifyingKey::from_bytes(&m.identity)
                .map_err(|_| invalid(format!("member {}: bad identity key", m.index)))?;
            CompressedRistretto(m.ring)
                .decompress()
                .ok_or_else(|| invalid(format!("member {}: bad ring key", m.index)))?;
            // A low-order x25519 key makes every share sealed to it readable by anyone.
            let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
            let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(m.x25519));
            if !shared.was_contributory() {
                return Err(invalid(format!(
                    "member {}: x25519 key of low order",
                    m.index
                )));
            }
            let earlier = self.members.iter().take(pos);
            for other in earlier {
                if other.name == m.name
                    || other.identity == m.identity
                    || other.x25519 == m.x25519
                    || other.ring == m.ring
                {
                    return Err(invalid(format!(
                        "members {} and {} share a name or key",
                        other.index, m.index
                    )));
                }
            }
        }
        Ok(())
    }

    /// The consortium id: SHA-256 over a domain label and the canonical (postcard) encoding.
    pub fn id(&self) -> ConsortiumId {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(b"bankmesh.consortium.v1");
        h.update(bytes);
        h.finalize().into()
    }
}

/// A consortium of `n` members with seeded keys, threshold 2 and a one-minute epoch, for unit
/// tests.
#[cfg(test)]
pub(crate) fn test_consortium(n: u16) -> Consortium {
    test_consortium_with_secrets(n).0
}

/// [`test_consortium`] with its members' secrets, in member order.
#[cfg(test)]
pub(crate) fn test_consortium_with_secrets(
    n: u16,
) -> (Consortium, Vec<crate::keys::MemberSecrets>) {
    use rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
    let secrets: Vec<crate::keys::MemberSecrets> = (1..=n)
        .map(|_| crate::keys::MemberSecrets::generate(&mut rng))
        .collect();
    let members = secrets
        .iter()
        .zip(1..=n)
        .map(|(s, i)| s.member_info(i, &format!("m{i}"), vec![]))
        .collect();
    let timing = Timing::new(0, 30_000, 60_000, 20_000, 30_000, 10_000);
    #[allow(clippy::unwrap_used)]
    let c = Consortium::new(Genesis::new("t", 2, timing, members)).unwrap();
    (c, secrets)
}

/// A validated genesis with its id and parsed keys: what the protocol runs on.
#[derive(Clone, Debug)]
pub struct Consortium {
    pub genesis: Genesis,
    pub id: ConsortiumId,
    identities: Vec<VerifyingKey>,
    x25519: Vec<x25519_dalek::PublicKey>,
    ring: Vec<RistrettoPoint>,
}

impl Consortium {
    pub fn new(genesis: Genesis) -> Result<Consortium, GenesisError> {
        genesis.validate()?;
        let mut identities = Vec::new();
        let mut x25519 = Vec::new();
        let mut ring = Vec::new();
        for m in &genesis.members {
            identities
                .push(VerifyingKey::from_bytes(&m.identity).map_err(|_| invalid("identity key"))?);
            x25519.push(x25519_dalek::PublicKey::from(m.x25519));
            ring.push(
                CompressedRistretto(m.ring)
                    .decompress()
                    .ok_or_else(|| invalid("ring key"))?,
            );
        }
        Ok(Consortium {
            id: genesis.id(),
            genesis,
            identities,
            x25519,
            ring,
        })
    }

    pub fn n(&self) -> usize {
        self.genesis.members.len()
    }
    pub fn threshold(&self) -> usize {
        usize::from(self.genesis.threshold)
    }
    pub fn quorum(&self) -> usize {
        usize::from(self.genesis.seal_quorum)
    }
    /// Fewest submissions a tag needs for its result to be disclosed.
    pub fn min_count(&self) -> u32 {
        u32::from(self.genesis.privacy.min_count)
    }
    /// Faulty members tolerated: `f = floor((n-1)/3)`.
    pub fn faulty(&self) -> usize {
        faulty(self.n())
    }
    /// Reports pinned by a seal value: `n - f`.
    pub fn reports_pinned(&self) -> usize {
        self.n() - self.faulty()
    }
    /// All member indices, 1..=n.
    pub fn indices(&self) -> impl Iterator<Item = MemberIndex> + '_ {
        self.genesis.members.iter().map(|m| m.index)
    }
    pub fn is_member(&self, index: MemberIndex) -> bool {
        index >= 1 && usize::from(index) <= self.n()
    }
    pub fn member(&self, index: MemberIndex) -> Option<&MemberInfo> {
        self.genesis.members.get(usize::from(index).checked_sub(1)?)
    }
    pub fn identity(&self, index: MemberIndex) -> Option<&VerifyingKey> {
        self.identities.get(usize::from(index).checked_sub(1)?)
    }
    pub fn x25519(&self, index: MemberIndex) -> Option<&x25519_dalek::PublicKey> {
        self.x25519.get(usize::from(index).checked_sub(1)?)
    }
    pub fn ring_keys(&self) -> &[RistrettoPoint] {
        &self.ring
    }
    /// The member whose identity key is `identity`, if any.
    pub fn index_of_identity(&self, identity: &[u8; 32]) -> Option<MemberIndex> {
        self.genesis
            .members
            .iter()
            .find(|m| &m.identity == identity)
            .map(|m| m.index)
    }

    pub fn dkg_deadline(&self) -> Time {
        Time(self.genesis.timing.start_ms).plus(self.genesis.timing.dkg_ms)
    }
    pub fn start(&self) -> Time {
        Time(self.genesis.timing.start_ms)
    }
    /// When epoch `e`'s setup (its DKG runs, fresh keys per epoch) starts: `dkg_ms` before the
    /// epoch, so epoch 1's at `start_ms`, and each later one during the epoch before.
    pub fn setup_start(&self, epoch: u64) -> Time {
        Time(
            self.epoch_start(epoch)
                .0
                .saturating_sub(self.genesis.timing.dkg_ms),
        )
    }
    /// Start of epoch `e` (epochs count from 1).
    pub fn epoch_start(&self, epoch: u64) -> Time {
        let t = &self.genesis.timing;
        self.dkg_deadline()
            .plus(epoch.saturating_sub(1).saturating_mul(t.epoch_ms))
    }
    pub fn submit_end(&self, epoch: u64) -> Time {
        self.epoch_start(epoch).plus(self.genesis.timing.submit_ms)
    }
    pub fn seal_end(&self, epoch: u64) -> Time {
        self.submit_end(epoch).plus(self.genesis.timing.seal_ms)
    }
    pub fn decrypt_end(&self, epoch: u64) -> Time {
        self.seal_end(epoch).plus(self.genesis.timing.decrypt_ms)
    }
    /// When a member reports its submissions at the latest: the submission deadline plus the
    /// clock-skew allowance, so that what any honest member held by the deadline is in its
    /// report whatever the skew within the bound.
    pub fn report_at(&self, epoch: u64) -> Time {
        self.submit_end(epoch)
            .plus(self.genesis.timing.clock_skew_ms)
    }
    /// Length of one DKG attempt.
    pub fn attempt_ms(&self) -> u64 {
        let t = &self.genesis.timing;
        if t.dkg_attempt_ms == 0 {
            (t.dkg_ms / 3).max(1)
        } else {
            t.dkg_attempt_ms
        }
    }
    /// The epoch whose submission window is open or next to open at `now` (1 before and
    /// during setup).
    pub fn epoch_at(&self, now: Time) -> u64 {
        let deadline = self.dkg_deadline();
        if now < deadline {
            1
        } else {
            1 + (now.0 - deadline.0) / self.genesis.timing.epoch_ms.max(1)
        }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|_| serde::de::Error::custom("expected 64 hex digits"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MemberSecrets;
    use rand_core::SeedableRng;

    fn genesis(n: usize) -> Genesis {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([6; 32]);
        let members = (1..=n)
            .map(|i| {
                let s = MemberSecrets::generate(&mut rng);
                s.member_info(
                    i as u16,
                    &format!("bank-{i}"),
                    vec![format!("/ip4/127.0.0.1/tcp/{}", 9000 + i)],
                )
            })
            .collect();
        Genesis {
            name: "test".into(),
            version: 1,
            threshold: 3,
            seal_quorum: default_seal_quorum(n),
            score_max: 1023,
            oprf_quota: 1000,
            timing: Timing {
                round_ms: 2,
                clock_skew_ms: 1,
                ..Timing::new(1, 10, 100, 10, 20, 10)
            },
            privacy: Privacy::default(),
            members,
        }
    }

    /// Some 32 bytes that are not an ed25519 point.
    fn not_a_point() -> [u8; 32] {
        (2u8..=255)
            .map(|k| {
                let mut b = [0u8; 32];
                b[0] = k;
                b
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap()
    }

    #[test]
    fn toml_round_trip_keeps_the_id() {
        let g = genesis(5);
        let back = Genesis::from_toml(&g.to_toml()).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.id(), g.id());
        assert_eq!(default_seal_quorum(5), 4);
        let mut other = g.clone();
        other.name = "test2".into();
        assert_ne!(other.id(), g.id(), "the id binds every field");
    }

    #[test]
    fn consortium_id_is_pinned() {
        assert_eq!(
            hex::encode(genesis(5).id()),
            "5b3f80c1e470c7b0cef7c5e248f025bffa3019bee9a397c927cb5b5e59983c88"
        );
    }

    #[test]
    fn invalid_genesis_is_refused_with_a_reason() {
        type Mutation = Box<dyn Fn(&mut Genesis)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("2..=64", Box::new(|g| g.members.truncate(1))),
            ("threshold", Box::new(|g| g.threshold = 6)),
            ("threshold", Box::new(|g| g.threshold = 1)),
            ("seal quorum", Box::new(|g| g.seal_quorum = 3)),
            ("seal quorum", Box::new(|g| g.seal_quorum = 6)),
            (
                "seal quorum 5 must be in 4..=4",
                Box::new(|g| g.seal_quorum = 5),
            ),
            ("score_max", Box::new(|g| g.score_max = 1000)),
            ("exceeds epoch_ms", Box::new(|g| g.timing.epoch_ms = 9)),
            ("round_ms", Box::new(|g| g.timing.round_ms = 0)),
            (
                "seal_ms must be at least",
                Box::new(|g| g.timing.seal_ms = 6),
            ),
            ("dkg_attempt_ms", Box::new(|g| g.timing.dkg_attempt_ms = 11)),
            (
                "bad identity key",
                Box::new(|g| g.members[1].identity = not_a_point()),
            ),
            ("low order", Box::new(|g| g.members[2].x25519 = [0; 32])),
            (
                "share a name or key",
                Box::new(|g| g.members[3].ring = g.members[0].ring),
            ),
            ("indices", Box::new(|g| g.members[4].index = 9)),
            ("min_count 0", Box::new(|g| g.privacy.min_count = 0)),
            (
                "min_count 6 must be in 1..=5",
                Box::new(|g| g.privacy.min_count = 6),
            ),
        ];
        for (expected, mutate) in cases {
            let mut g = genesis(5);
            mutate(&mut g);
            let err = g
                .validate()
                .err()
                .unwrap_or_else(|| panic!("accepted: {expected}"))
                .to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        let text = genesis(5)
            .to_toml()
            .replace("name = \"test\"", "name = \"test\"\nextra = 1");
        // A file written before the agreement timings existed still parses, with defaults.
        let old = genesis(5)
            .to_toml()
            .lines()
            .filter(|l| !l.starts_with("dkg_attempt_ms") && !l.starts_with("round_ms"))
            .filter(|l| !l.starts_with("clock_skew_ms"))
            .collect::<Vec<_>>()
            .join("\n");
        let back: Genesis = toml::from_str(&old).unwrap();
        assert_eq!(
            (back.timing.round_ms, back.timing.clock_skew_ms),
            (2_000, 1_000)
        );
        assert_eq!(back.timing.dkg_attempt_ms, 0);
        assert!(matches!(
            Genesis::from_toml(&text),
            Err(GenesisError::Parse(_))
        ));
    }
}
