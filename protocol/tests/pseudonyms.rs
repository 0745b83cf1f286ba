//! Client pseudonyms (DESIGN 3): the threshold OPRF output of an id is the same whichever bank
//! asks and whichever `t` members answer; it differs across ids; the per-epoch tag differs
//! across epochs. A bank without the id cannot open a result key-switched to another bank.

use bankmesh_protocol::crypto::oprf::{self, Blind};
use bankmesh_protocol::crypto::{elgamal, keyswitch, tag, transcript};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::scalar::Scalar;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A 3-of-5 Shamir sharing of `secret`: shares at 1..=5.
fn share(secret: Scalar, rng: &mut ChaCha20Rng) -> Vec<Scalar> {
    let a1 = Scalar::random(rng);
    let a2 = Scalar::random(rng);
    (1..=5u64)
        .map(|i| {
            let x = Scalar::from(i);
            secret + a1 * x + a2 * x * x
        })
        .collect()
}

/// One bank's pseudonym for `id`, evaluated by members `who`.
fn pseudonym(id: &[u8], k: &[Scalar], who: &[u16], rng: &mut ChaCha20Rng) -> [u8; 64] {
    let blind = Blind::random(rng);
    let blinded = oprf::blind(id, &blind).unwrap();
    let partials: Vec<(u16, _)> = who
        .iter()
        .map(|&i| {
            let ki = k[usize::from(i) - 1];
            let (ev, proof) = oprf::evaluate(&ki, &[blinded], rng).unwrap();
            oprf::verify_evaluation(&(ki * G), &[blinded], &ev, &proof).unwrap();
            (i, ev[0])
        })
        .collect();
    oprf::finalize(id, &blind, &oprf::combine(&partials).unwrap())
}

#[test]
fn same_id_same_pseudonym_across_banks_and_evaluators() {
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    let k = share(Scalar::random(&mut rng), &mut rng);
    let by_bank_a = pseudonym(b"alice", &k, &[1, 2, 3], &mut rng);
    let by_bank_b = pseudonym(b"alice", &k, &[2, 4, 5], &mut rng);
    assert_eq!(by_bank_a, by_bank_b);
    assert_ne!(by_bank_a, pseudonym(b"alicf", &k, &[1, 2, 3], &mut rng));
    // Two evaluators are not enough: the combination is some other value.
    let blind = Blind::random(&mut rng);
    let blinded = oprf::blind(b"alice", &blind).unwrap();
    let two: Vec<(u16, _)> = [1u16, 2]
        .iter()
        .map(|&i| {
            (
                i,
                oprf::evaluate(&k[usize::from(i) - 1], &[blinded], &mut rng)
                    .unwrap()
                    .0[0],
            )
        })
        .collect();
    assert_ne!(
        oprf::finalize(b"alice", &blind, &oprf::combine(&two).unwrap()),
        by_bank_a
    );
}

#[test]
fn tags_differ_across_epochs_and_ids() {
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let k = share(Scalar::random(&mut rng), &mut rng);
    let c = [1u8; 32];
    let y = pseudonym(b"alice", &k, &[1, 2, 3], &mut rng);
    let y2 = pseudonym(b"bob", &k, &[1, 2, 3], &mut rng);
    let t1 = tag::tag_key(&c, 1, b"alice", &y).public();
    assert_eq!(
        t1,
        tag::tag_key(
            &c,
            1,
            b"alice",
            &pseudonym(b"alice", &k, &[3, 4, 5], &mut rng)
        )
        .public()
    );
    assert_ne!(
        t1,
        tag::tag_key(&c, 2, b"alice", &y).public(),
        "tags change every epoch"
    );
    assert_ne!(t1, tag::tag_key(&c, 1, b"bob", &y2).public());
    assert_ne!(
        t1,
        tag::tag_key(&[2u8; 32], 1, b"alice", &y).public(),
        "tags are bound to the consortium"
    );
}

#[test]
fn a_bank_without_the_client_cannot_open_its_result() {
    let mut rng = ChaCha20Rng::from_seed([10; 32]);
    let x = share(Scalar::random(&mut rng), &mut rng);
    let group = (x[0] * Scalar::from(3u64) - x[1] * Scalar::from(3u64) + x[2]) * G; // f(0) from f(1..3)
    let aggregate = elgamal::encrypt(&group, 700, &Scalar::random(&mut rng))
        + elgamal::encrypt(&group, 300, &Scalar::random(&mut rng));
    // The holder's one-time key, and an outsider's key of its own.
    let o = Scalar::random(&mut rng);
    let outsider = Scalar::random(&mut rng);
    let shares: Vec<(u16, keyswitch::KeySwitchShare)> = (1..=3u16)
        .map(|i| {
            let xi = x[usize::from(i) - 1];
            let mut t = transcript(&[0; 32], 1, b"key-switch");
            (
                i,
                keyswitch::key_switch(&mut t, &xi, &(xi * G), &aggregate, &(o * G), &mut rng),
            )
        })
        .collect();
    let open = |key: &Scalar| {
        let stripped: Vec<(u16, _)> = shares
            .iter()
            .map(|(i, s)| (*i, keyswitch::strip(s, key)))
            .collect();
        keyswitch::combine(&aggregate, &stripped, 3)
            .and_then(|p| bankmesh_protocol::crypto::dlog::small_dlog(&p))
    };
    assert_eq!(open(&o), Ok(1000));
    assert!(
        open(&outsider).is_err(),
        "an outsider's key yields no small sum"
    );
}
