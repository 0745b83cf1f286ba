//! Record encodings pinned by snapshot tests (STYLE 6), canonical decoding, and tampering.

use std::sync::Arc;

use bankmesh_protocol::consensus::VoteKind;
use bankmesh_protocol::crypto::{elgamal, keyswitch, ring, schnorr, transcript, validity};
use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::record::{
    Body, Instance, Record, RingKeyAnnouncement, Run, SealedShare, ShareEntry, Submission,
    UncheckedRecord, Value,
};
use bankmesh_protocol::{Bank, MemberSecrets, Origin, Time, Verdict};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::scalar::Scalar;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

fn consortium() -> (Arc<Consortium>, Vec<MemberSecrets>) {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let secrets: Vec<MemberSecrets> = (0..3).map(|_| MemberSecrets::generate(&mut rng)).collect();
    let mut genesis = Genesis {
        oprf_quota: 10,
        ..Genesis::new(
            "snapshot",
            2,
            Timing {
                round_ms: 2,
                clock_skew_ms: 1,
                ..Timing::new(1, 10, 100, 10, 10, 10)
            },
            secrets
                .iter()
                .enumerate()
                .map(|(i, s)| s.member_info(i as u16 + 1, &format!("m{i}"), vec![]))
                .collect(),
        )
    };
    genesis.privacy.client_bucket = 10;
    (Arc::new(Consortium::new(genesis).unwrap()), secrets)
}

fn identified(c: &Consortium, s: &MemberSecrets, seq: u64, body: Body) -> Record {
    Record::identified(&c.id, s.identity(), 1, seq, [seq as u8; 32], body)
}

fn sample_submission(c: &Consortium, poster: &MemberSecrets) -> Submission {
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let x = Scalar::from(77u64) * G;
    let tag_key = schnorr::TagKey::from_scalar(Scalar::from(5u64));
    let tag = tag_key.public();
    let one_time = Scalar::from(6u64) * G;
    let mut t = transcript(&c.id, 1, b"test");
    let (ciphertext, validity) = validity::encrypt_with_proof(&mut t, &x, 700, &mut rng).unwrap();
    let mut s = Submission {
        epoch: 1,
        tag,
        ciphertext,
        one_time,
        validity,
        holder: schnorr::Signature {
            r: Default::default(),
            s: Scalar::ZERO,
        },
        ring: ring::RingSignature {
            slot: 0,
            link: Default::default(),
            slot_tag: Default::default(),
            c0: Scalar::ZERO,
            responses: Vec::new(),
        },
    };
    s.holder = schnorr::sign(
        &mut transcript(&c.id, 1, b"holder"),
        &tag_key,
        &s.signed_bytes(),
        &mut rng,
    );
    let t = tag.compress().to_bytes();
    s.ring = ring::sign(
        &ring::RingContext {
            consortium: &c.id,
            epoch: 1,
            tag: &t,
        },
        3,
        c.ring_keys(),
        0,
        &ring::RingKey::from_scalar(*poster.ring()),
        &s.ring_signed_bytes(),
        &mut rng,
    )
    .unwrap();
    s
}

/// Every record kind: (name, record).
fn samples() -> Vec<(&'static str, Record)> {
    let (c, secrets) = consortium();
    let s = &secrets[0];
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let aggregate = elgamal::encrypt(&(Scalar::from(2u64) * G), 5, &Scalar::from(3u64));
    let share = keyswitch::key_switch(
        &mut transcript(&c.id, 1, b"t"),
        &Scalar::from(4u64),
        &(Scalar::from(4u64) * G),
        &aggregate,
        &(Scalar::from(6u64) * G),
        &mut rng,
    );
    vec![
        (
            "dkg-round1",
            identified(
                &c,
                s,
                1,
                Body::DkgRound1 {
                    epoch: 1,
                    run: Run::Decryption,
                    attempt: 0,
                    package: vec![1, 2, 3],
                    seal_key: [7; 32],
                    ring: Some(Box::new(RingKeyAnnouncement {
                        key: Scalar::from(8u64) * G,
                        proof: schnorr::Signature {
                            r: (Scalar::from(9u64) * G).compress(),
                            s: Scalar::from(10u64),
                        },
                    })),
                },
            ),
        ),
        (
            "dkg-round2",
            identified(
                &c,
                s,
                2,
                Body::DkgRound2 {
                    epoch: 1,
                    run: Run::Pseudonym,
                    attempt: 0,
                    ephemeral: [4; 32],
                    shares: vec![SealedShare {
                        recipient: 2,
                        ciphertext: vec![5, 6],
                    }],
                },
            ),
        ),
        (
            "oprf-usage",
            identified(
                &c,
                s,
                4,
                Body::OprfUsage {
                    epoch: 1,
                    served: vec![(2, 10), (3, 7)],
                },
            ),
        ),
        (
            "report",
            identified(
                &c,
                s,
                5,
                Body::Report {
                    epoch: 1,
                    part: 0,
                    last: true,
                    hashes: vec![[8; 32], [9; 32]],
                },
            ),
        ),
        (
            "proposal",
            identified(
                &c,
                s,
                7,
                Body::Proposal {
                    instance: Instance::Seal { epoch: 1 },
                    round: 0,
                    valid_round: None,
                    value: Value::Seal {
                        reports: vec![(1, [1; 32]), (2, [2; 32])],
                    },
                },
            ),
        ),
        (
            "prevote",
            identified(
                &c,
                s,
                8,
                Body::Vote {
                    instance: Instance::Setup {
                        epoch: 1,
                        attempt: 1,
                    },
                    kind: VoteKind::Prevote,
                    round: 2,
                    value: Some(Value::SetupKeys {
                        transcripts: [[3; 32], [4; 32]],
                    }),
                },
            ),
        ),
        (
            "precommit",
            identified(
                &c,
                s,
                9,
                Body::Vote {
                    instance: Instance::Setup {
                        epoch: 1,
                        attempt: 0,
                    },
                    kind: VoteKind::Precommit,
                    round: 1,
                    value: Some(Value::SetupRetry { next: vec![1, 2] }),
                },
            ),
        ),
        (
            "decryption-shares",
            identified(
                &c,
                s,
                6,
                Body::DecryptionShares {
                    epoch: 1,
                    root: [8; 32],
                    shares: vec![ShareEntry {
                        submission: [9; 32],
                        share,
                    }],
                },
            ),
        ),
        (
            "submission",
            Record::submission(&c.id, sample_submission(&c, s)),
        ),
    ]
}

/// SHA-256 of each record's canonical bytes, pinned. A change here is a wire-format change:
/// bump `record::VERSION` rather than editing these.
const PINNED: &[(&str, usize, &str)] = &[
    (
        "dkg-round1",
        270,
        "46018b87939f8615dfe934cd55db00b4f372b3424c52ae0c6a79739838db8bc8",
    ),
    (
        "dkg-round2",
        174,
        "a1c28a727d75d476822936cd760285b07c8630f601ded3cf4a2e3b6b2513c242",
    ),
    (
        "oprf-usage",
        140,
        "bf7dd3eb5bb7d7c7944bc2b10726c980d7d5e32f08bf21e39400c88f02df679d",
    ),
    (
        "report",
        202,
        "8a75fbba7e38e2bd18d3fcfa79c2e1fa0bbd1ddc1f39a7cde8d6eb1fc8c4a3f3",
    ),
    (
        "proposal",
        206,
        "738433121b561698770cf044b92d2d5a8f6e785598cde017ef24dd3b068fad8b",
    ),
    (
        "prevote",
        205,
        "414d2efc37b9ea2156c59fb8de044fda2c4264f1e64a71d834284c68dabbffdd",
    ),
    (
        "precommit",
        144,
        "790b9b8ddd8c9da169b0464acf3d205681774805ad0fff2782b0833bc68401af",
    ),
    (
        "decryption-shares",
        360,
        "68b26e2eada4874aff100fbfe2a49600318ea5ad4a6b4c0032f65d10b9220814",
    ),
    (
        "submission",
        1192,
        "ae19109d4f5640d1f8e8e382ac54502085387e4666f0eb37c6426a11d4641347",
    ),
];

#[test]
fn encodings_are_pinned_and_round_trip() {
    let mut report = String::new();
    let mut mismatch = false;
    assert_eq!(
        samples().len(),
        PINNED.len(),
        "one pinned encoding per record kind"
    );
    for ((name, record), (pname, plen, phash)) in samples().into_iter().zip(PINNED) {
        assert_eq!(name, *pname);
        let hash = hex::encode(Sha256::digest(record.bytes()));
        report.push_str(&format!(
            "    (\"{name}\", {}, \"{hash}\"),\n",
            record.bytes().len()
        ));
        mismatch |= record.bytes().len() != *plen || hash != *phash;
        let decoded = UncheckedRecord::decode(record.bytes()).unwrap();
        assert_eq!(
            decoded.envelope(),
            record.envelope(),
            "{name} decodes to what was encoded"
        );
        assert_eq!(decoded.hash(), record.hash());
    }
    assert!(!mismatch, "encodings changed; now:\n{report}");
}

#[test]
fn non_canonical_or_trailing_bytes_are_refused() {
    for (name, record) in samples() {
        let mut longer = record.bytes().to_vec();
        longer.push(0);
        assert!(
            UncheckedRecord::decode(&longer).is_err(),
            "{name} with a trailing byte"
        );
        assert!(
            UncheckedRecord::decode(&record.bytes()[..record.bytes().len() - 1]).is_err(),
            "{name} truncated"
        );
    }
    assert!(UncheckedRecord::decode(&[]).is_err());
}

#[test]
fn any_flipped_byte_of_a_signed_record_is_rejected() {
    let (c, secrets) = consortium();
    let mut secrets = secrets.into_iter();
    let bank = Bank::new(Arc::clone(&c), 2, secrets.nth(1).unwrap());
    let record = identified(
        &c,
        &consortium().1[0],
        1,
        Body::Report {
            epoch: 1,
            part: 0,
            last: true,
            hashes: vec![[8; 32]],
        },
    );
    assert!(matches!(
        bank.check(
            Time(0),
            Origin::Sync { from: 1 },
            UncheckedRecord::decode(record.bytes()).unwrap()
        ),
        Verdict::Accept(_)
    ));
    for i in 0..record.bytes().len() {
        let mut bytes = record.bytes().to_vec();
        bytes[i] ^= 0x01;
        if let Ok(u) = UncheckedRecord::decode(&bytes) {
            let verdict = bank.check(Time(0), Origin::Sync { from: 1 }, u);
            assert!(
                matches!(verdict, Verdict::Reject(_)),
                "byte {i} flipped was not rejected: {verdict:?}"
            );
        }
    }
}

#[test]
fn identified_record_relayed_by_another_source_is_rejected() {
    let (c, secrets) = consortium();
    let record = identified(
        &c,
        &secrets[0],
        1,
        Body::OprfUsage {
            epoch: 1,
            served: vec![],
        },
    );
    let bank = Bank::new(
        Arc::clone(&c),
        3,
        consortium().1.into_iter().nth(2).unwrap(),
    );
    let verdict = bank.check(
        Time(0),
        Origin::Gossip { from: 2 },
        UncheckedRecord::decode(record.bytes()).unwrap(),
    );
    assert!(matches!(verdict, Verdict::Reject(f) if format!("{f}").contains("member 2")));
}
