#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;

const CONSORTIUM: ConsortiumId = [7u8; 32];
const TAG: [u8; 32] = [9u8; 32];
const QUOTA: u32 = 100;

fn ctx(epoch: u64, tag: &[u8; 32]) -> RingContext<'_> {
    RingContext {
        consortium: &CONSORTIUM,
        epoch,
        tag,
    }
}

fn keys(n: usize, rng: &mut ChaCha20Rng) -> (Vec<RingKey>, Vec<RistrettoPoint>) {
    let keys: Vec<RingKey> = (0..n).map(|_| RingKey::random(rng)).collect();
    let ring = keys.iter().map(RingKey::public).collect();
    (keys, ring)
}

#[test]
fn ring_verifies_for_every_signer_position_and_ring_size() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    for n in 2..=RING_MAX {
        let (keys, ring) = keys(n, &mut rng);
        for (s, key) in keys.iter().enumerate() {
            let sig = sign(&ctx(3, &TAG), 5, &ring, s, key, b"record", &mut rng).unwrap();
            let linked = verify(&ctx(3, &TAG), QUOTA, &ring, b"record", &sig)
                .unwrap_or_else(|e| panic!("ring of {n}, signer {s}: {e}"));
            assert_eq!(
                linked.link,
                (key.secret * link_base(&CONSORTIUM, 3, &TAG))
                    .compress()
                    .to_bytes()
            );
        }
    }
}

#[test]
fn ring_fails_for_any_tampered_field() {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let (keys, ring) = keys(5, &mut rng);
    let c = ctx(3, &TAG);
    let sig = sign(&c, 5, &ring, 2, &keys[2], b"record", &mut rng).unwrap();
    assert!(verify(&c, QUOTA, &ring, b"record", &sig).is_ok());
    let fails =
        |ctx: &RingContext<'_>, ring: &[RistrettoPoint], msg: &[u8], sig: &RingSignature| {
            verify(ctx, QUOTA, ring, msg, sig).is_err()
        };
    assert!(fails(&c, &ring, b"recorD", &sig), "message");
    let other = [8u8; 32];
    assert!(fails(&ctx(3, &other), &ring, b"record", &sig), "tag");
    assert!(fails(&ctx(4, &TAG), &ring, b"record", &sig), "epoch");
    let mut swapped = ring.clone();
    swapped.swap(0, 1);
    assert!(fails(&c, &swapped, b"record", &sig), "ring order");
    let mut replaced = ring.clone();
    replaced[4] = RingKey::random(&mut rng).public();
    assert!(fails(&c, &replaced, b"record", &sig), "a ring member");
    assert!(fails(&c, &ring[..4], b"record", &sig), "a shorter ring");
    let g = curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    let mut t = sig.clone();
    t.link = (t.link.decompress().unwrap() + g).compress();
    assert!(fails(&c, &ring, b"record", &t), "link tag");
    let mut t = sig.clone();
    t.slot_tag = (t.slot_tag.decompress().unwrap() + g).compress();
    assert!(fails(&c, &ring, b"record", &t), "slot tag");
    let mut t = sig.clone();
    t.slot += 1;
    assert!(fails(&c, &ring, b"record", &t), "slot");
    for i in 0..5 {
        let mut t = sig.clone();
        t.responses[i] += Scalar::ONE;
        assert!(fails(&c, &ring, b"record", &t), "response {i}");
    }
    let mut t = sig.clone();
    t.c0 += Scalar::ONE;
    assert!(fails(&c, &ring, b"record", &t), "c0");
    // A key image that is the identity (a signer claiming `x = 0` on the base) is refused.
    let mut t = sig.clone();
    t.link = RistrettoPoint::default().compress();
    assert_eq!(
        verify(&c, QUOTA, &ring, b"record", &t),
        Err(CryptoError::InvalidPoint)
    );
}

#[test]
fn ring_slots_at_or_above_the_quota_are_refused() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let (keys, ring) = keys(3, &mut rng);
    let c = ctx(1, &TAG);
    let last = sign(&c, QUOTA - 1, &ring, 0, &keys[0], b"m", &mut rng).unwrap();
    assert!(verify(&c, QUOTA, &ring, b"m", &last).is_ok());
    let over = sign(&c, QUOTA, &ring, 0, &keys[0], b"m", &mut rng).unwrap();
    assert!(verify(&c, QUOTA, &ring, b"m", &over).is_err());
    assert!(verify(&c, QUOTA + 1, &ring, b"m", &over).is_ok());
    let max = sign(&c, u32::MAX, &ring, 0, &keys[0], b"m", &mut rng).unwrap();
    assert!(verify(&c, u32::MAX, &ring, b"m", &max).is_err());
}

#[test]
fn ring_one_signer_and_tag_give_one_link_tag() {
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let (keys, ring) = keys(4, &mut rng);
    let c = ctx(2, &TAG);
    let a = verify(
        &c,
        QUOTA,
        &ring,
        b"one",
        &sign(&c, 1, &ring, 3, &keys[3], b"one", &mut rng).unwrap(),
    )
    .unwrap();
    let b = verify(
        &c,
        QUOTA,
        &ring,
        b"two",
        &sign(&c, 2, &ring, 3, &keys[3], b"two", &mut rng).unwrap(),
    )
    .unwrap();
    assert_eq!(a.link, b.link, "a second post for the tag shows");
    assert_ne!(a.slot_tag, b.slot_tag, "other slots");
    // A reused slot shows too, whatever the tag.
    let other = [1u8; 32];
    let c2 = ctx(2, &other);
    let d = verify(
        &c2,
        QUOTA,
        &ring,
        b"x",
        &sign(&c2, 1, &ring, 3, &keys[3], b"x", &mut rng).unwrap(),
    )
    .unwrap();
    assert_eq!(a.slot_tag, d.slot_tag);
    // Another member, same tag and slot: nothing in common.
    let e = verify(
        &c,
        QUOTA,
        &ring,
        b"one",
        &sign(&c, 1, &ring, 0, &keys[0], b"one", &mut rng).unwrap(),
    )
    .unwrap();
    assert_ne!(a.link, e.link);
    assert_ne!(a.slot_tag, e.slot_tag);
}

#[test]
fn ring_different_tags_or_epochs_give_unlinkable_tags() {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let (keys, ring) = keys(4, &mut rng);
    let mut links = std::collections::BTreeSet::new();
    let mut slots = std::collections::BTreeSet::new();
    for epoch in 1..=3u64 {
        for t in 0..4u8 {
            let tag = [t; 32];
            let c = ctx(epoch, &tag);
            let slot = u32::from(t);
            let sig = sign(&c, slot, &ring, 1, &keys[1], b"m", &mut rng).unwrap();
            let l = verify(&c, QUOTA, &ring, b"m", &sig).unwrap();
            assert!(
                links.insert(l.link),
                "link tags differ across tags and epochs"
            );
            assert!(
                slots.insert(l.slot_tag),
                "slot tags differ across slots and epochs"
            );
        }
    }
    assert_ne!(
        link_base(&CONSORTIUM, 1, &TAG),
        link_base(&[8; 32], 1, &TAG),
        "consortium"
    );
}

#[test]
fn ring_rejects_bad_rings_and_a_signer_not_in_place() {
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let (keys, ring) = keys(RING_MAX + 1, &mut rng);
    let c = ctx(1, &TAG);
    assert!(sign(&c, 0, &ring[..1], 0, &keys[0], b"m", &mut rng).is_err());
    assert!(sign(&c, 0, &ring, 0, &keys[0], b"m", &mut rng).is_err());
    assert!(
        sign(&c, 0, &ring[..4], 1, &keys[0], b"m", &mut rng).is_err(),
        "key not at its position"
    );
    let mut with_identity = ring[..4].to_vec();
    with_identity[3] = RistrettoPoint::default();
    assert!(sign(&c, 0, &with_identity, 0, &keys[0], b"m", &mut rng).is_err());
    let sig = sign(&c, 0, &ring[..4], 0, &keys[0], b"m", &mut rng).unwrap();
    assert!(verify(&c, QUOTA, &with_identity, b"m", &sig).is_err());
}

#[test]
fn ring_encoding_round_trips_and_refuses_non_canonical_scalars() {
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let (keys, ring) = keys(3, &mut rng);
    let c = ctx(1, &TAG);
    let sig = sign(&c, 9, &ring, 1, &keys[1], b"m", &mut rng).unwrap();
    let bytes = postcard::to_stdvec(&sig).unwrap();
    // slot (1-byte varint), L, S, c0, count (1-byte varint), 3 responses.
    assert_eq!(bytes.len(), 1 + 3 * 32 + 1 + 3 * 32);
    assert_eq!(postcard::from_bytes::<RingSignature>(&bytes).unwrap(), sig);
    assert!(postcard::from_bytes::<RingSignature>(&bytes[..bytes.len() - 1]).is_err());
    let mut high = bytes.clone();
    high[1 + 2 * 32 + 31] |= 0xf0;
    assert!(
        postcard::from_bytes::<RingSignature>(&high).is_err(),
        "c0 not reduced"
    );
    let mut high = bytes.clone();
    high[1 + 3 * 32 + 1 + 31] |= 0xf0;
    assert!(
        postcard::from_bytes::<RingSignature>(&high).is_err(),
        "response not reduced"
    );
    // Points decode as bytes; verify refuses what is no point, and a wrong number of responses.
    let mut bad = sig.clone();
    bad.slot_tag = CompressedRistretto([0xff; 32]);
    assert_eq!(
        verify(&c, QUOTA, &ring, b"m", &bad),
        Err(CryptoError::InvalidPoint)
    );
    let mut short = sig.clone();
    short.responses.pop();
    assert_eq!(
        verify(&c, QUOTA, &ring, b"m", &short),
        Err(CryptoError::BadInput)
    );
}

/// Known answers: the bases and a signature's bytes from a fixed seed. Any change to the
/// hashing, the transcript or the encoding changes them.
#[test]
fn ring_known_answer_vectors() {
    assert_eq!(
        hex::encode(link_base(&CONSORTIUM, 1, &TAG).compress().as_bytes()),
        KAT_LINK_BASE
    );
    assert_eq!(
        hex::encode(slot_base(&CONSORTIUM, 1, 0).compress().as_bytes()),
        KAT_SLOT_BASE
    );
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let (keys, ring) = keys(3, &mut rng);
    let sig = sign(&ctx(1, &TAG), 2, &ring, 1, &keys[1], b"kat", &mut rng).unwrap();
    assert_eq!(
        hex::encode(postcard::to_stdvec(&sig).unwrap()),
        KAT_SIGNATURE
    );
}

const KAT_LINK_BASE: &str = "42d6571fd9dd4daa11dcd4c8add0677271deb5d6e31b70213356ed93bb29cf40";
const KAT_SLOT_BASE: &str = "2028afcd1de49c539522363a7e197152cd03c6cefd41c61fb81299304ed3c21c";
const KAT_SIGNATURE: &str = concat!(
    "020aaacb4b7d8ca1f42ae63f8ddf54cab7b607d32d2a90accb21e8d45740e3e3",
    "29ec29ed001f9500d63cc392f9b0b77f0bdd22ab0929155e895402af9508a7b0",
    "6c961bcbae6476114211a9fb4331b9078aebf5b963f67ec0abf063a68e7938c8",
    "0c036a2292dab72edb50cc13cdf8b402c287daa7b2ab4d77f2dd63add4e2002a",
    "5f08e9f79781ff803d9736e8a5a1accee784920bc293799cfd2e046298f97991",
    "540bdf137977acf1417a6f8a14b463db3a2f0aa25949c52e76f668d0db6fa8da",
    "d307",
);
