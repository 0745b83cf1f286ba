//! Record encodings pinned by snapshot tests (STYLE 6), canonical decoding, and tampering.

use std::sync::Arc;

use bankmesh_protocol::crypto::{elgamal, keyswitch, schnorr, transcript, validity};
use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::record::{
    Body, Record, Run, SealedShare, ShareEntry, Submission, UncheckedRecord,
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
    let genesis = Genesis {
        oprf_quota: 10,
        ..Genesis::new(
            "snapshot",
            2,
            Timing {
                start_ms: 1,
                dkg_ms: 10,
                epoch_ms: 100,
                submit_ms: 10,
                seal_ms: 10,
                decrypt_ms: 10,
            },
            secrets
                .iter()
                .enumerate()
                .map(|(i, s)| s.member_info(i as u16 + 1, &format!("m{i}"), vec![]))
                .collect(),
        )
    };
    (Arc::new(Consortium::new(genesis).unwrap()), secrets)
}

fn identified(c: &Consortium, s: &MemberSecrets, seq: u64, body: Body) -> Record {
    Record::identified(&c.id, s.identity(), 1, seq, [seq as u8; 32], body)
}

fn sample_submission(c: &Consortium) -> Submission {
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
    };
    s.holder = schnorr::sign(
        &mut transcript(&c.id, 1, b"holder"),
        &tag_key,
        &s.signed_bytes(),
        &mut rng,
    );
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
                    run: Run::Decryption,
                    attempt: 0,
                    package: vec![1, 2, 3],
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
        ("ready", identified(&c, s, 3, Body::Ready { epoch: 1 })),
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
            "checkpoint",
            identified(
                &c,
                s,
                5,
                Body::Checkpoint {
                    epoch: 1,
                    count: 2,
                    root: [8; 32],
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
            Record::submission(&c.id, sample_submission(&c)),
        ),
        (
            "dkg-confirm",
            identified(
                &c,
                s,
                7,
                Body::DkgConfirm {
                    run: Run::Decryption,
                    attempt: 0,
                    transcript: [6; 32],
                },
            ),
        ),
    ]
}

/// SHA-256 of each record's canonical bytes, pinned. A change here is a wire-format change:
/// bump `record::VERSION` rather than editing these.
const PINNED: &[(&str, usize, &str)] = &[
    (
        "dkg-round1",
        140,
        "fe6136c012e2533f3a14fcff7559bbb9471ea28f3b4790c5f0c13fb2f9ce009e",
    ),
    (
        "dkg-round2",
        173,
        "0748a89621d951a64a4c15b06cc6d2f73e3ae74c5510cb93a79c01d3de140447",
    ),
    (
        "ready",
        135,
        "060a0ef2bbabb2fa888a1eb62ad78b4c5f66cd6660ca9f280c55265c95dc3204",
    ),
    (
        "oprf-usage",
        140,
        "6a65edc3fb38f6b004ce3e5f9bd62f048703bfed2f887d430c5e9ace467dfb4e",
    ),
    (
        "checkpoint",
        168,
        "59a02956e22ce4bab92d4cc8d3140cf3ca7c5f247b0b007a6b926af0e95b037f",
    ),
    (
        "decryption-shares",
        360,
        "d44602684401f2527df1b70d8298bc20fd274e285d7f943d1ecfca0dfe2410a2",
    ),
    (
        "submission",
        998,
        "092f17a2569e1b7b539d05423f8e9e8e52412866f607c8e6395e9a69953b3466",
    ),
    (
        "dkg-confirm",
        168,
        "4bd4ded4fad54a00ac84a4ebf4b197ceebf8bf354a6a0cbebde33cb046376900",
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
    let mut bank = Bank::new(Arc::clone(&c), 2, secrets.nth(1).unwrap());
    let record = identified(
        &c,
        &consortium().1[0],
        1,
        Body::Checkpoint {
            epoch: 1,
            count: 2,
            root: [8; 32],
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
    let record = identified(&c, &secrets[0], 1, Body::Ready { epoch: 1 });
    let mut bank = Bank::new(
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
