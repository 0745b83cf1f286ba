//! Record encodings pinned by snapshot tests (STYLE 6), canonical decoding, and tampering.

use std::sync::Arc;

use bankmesh_protocol::consensus::VoteKind;
use bankmesh_protocol::crypto::sealed::SharedProof;
use bankmesh_protocol::crypto::{elgamal, keyswitch, ring, schnorr, transcript, validity};
use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::record::{
    Body, Evidence, Instance, Record, RingKeyAnnouncement, Run, SealedShare, ShareEntry,
    Submission, UncheckedRecord, Value,
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
                    ephemeral_proof: schnorr::Signature {
                        r: (Scalar::from(3u64) * G).compress(),
                        s: Scalar::from(4u64),
                    },
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
            "dkg-complaint",
            identified(
                &c,
                s,
                7,
                Body::DkgComplaint {
                    epoch: 1,
                    run: Run::Decryption,
                    attempt: 0,
                    dealer: 3,
                    shared: (Scalar::from(8u64) * G).compress().to_bytes(),
                    proof: SharedProof {
                        c: Scalar::from(9u64),
                        z: Scalar::from(10u64),
                    },
                },
            ),
        ),
        (
            "dkg-done",
            identified(
                &c,
                s,
                8,
                Body::DkgDone {
                    epoch: 1,
                    run: Run::Pseudonym,
                    attempt: 1,
                },
            ),
        ),
        (
            "fault",
            identified(
                &c,
                s,
                9,
                Body::Fault {
                    epoch: 1,
                    evidence: Evidence::Equivocation {
                        first: vec![1, 2, 3],
                        second: vec![4, 5],
                    },
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
        "f172c06e9f3f681f8e0f6698b68800bb087879909acaab58541c88feff38b2ec",
    ),
    (
        "dkg-round2",
        238,
        "c0dbf44acfd34664bea16f94adab8eb1382279aa3674e693009412dad00d5bf7",
    ),
    (
        "oprf-usage",
        140,
        "00f768687157e0abc9ef05287d1a327f36add5358fbb1c146dddfaf7e3f6b72f",
    ),
    (
        "report",
        202,
        "edad9b4bdbb21c82cbc107a53c1af05ba308073066d39a97ecedcecaaba34e3f",
    ),
    (
        "proposal",
        206,
        "c39ac08a9bc17132d7f9a969d59b5250c699a93436ff42905d369dcb82fe34f5",
    ),
    (
        "prevote",
        205,
        "07853c97f7439dce886047848b911c5dec92041e164b679f97f40b7eec1d3346",
    ),
    (
        "precommit",
        144,
        "5a331d9f4fffd67766f16d639ab134dfb1e11ead174ff72dd41c64ab0478ef70",
    ),
    (
        "decryption-shares",
        360,
        "c86c3d87fc5130b22aa04a8a81ff605f3e63fd2f3f4f30cf8b60295c8b116ca3",
    ),
    (
        "dkg-complaint",
        234,
        "54ffe0ff6e1093a0254713da427b6942dd78d48b8bb2b436ccacc9049957bdf9",
    ),
    (
        "dkg-done",
        137,
        "1095a220757ddde04726899133d9da5fd6cbebd4ef94736e3750c29d72102ecb",
    ),
    (
        "fault",
        143,
        "4ac95242e25b5cf8e5b0355da74808f2e219f6b63c317808b4cdf2cd13187599",
    ),
    (
        "submission",
        1192,
        "7fb389c49c43657237d8f45239e71e3fc405b0f340f8880eaef7cbf49dac080b",
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
