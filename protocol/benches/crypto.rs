//! Costs of the per-record cryptography (DESIGN 3), to compare as ratios within one run.

use bankmesh_protocol::crypto::oprf::{self, Blind};
use bankmesh_protocol::crypto::ring::{self, RingContext, RingKey};
use bankmesh_protocol::crypto::{dlog, elgamal, keyswitch, transcript, validity};
use bankmesh_protocol::relay::packet;
use criterion::{criterion_group, criterion_main, Criterion};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::scalar::Scalar;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let x = Scalar::random(&mut rng);
    let public = x * G;
    let id = [0u8; 32];

    c.bench_function("submission: encrypt + validity proof", |b| {
        b.iter(|| {
            validity::encrypt_with_proof(&mut transcript(&id, 1, b"b"), &public, 700, &mut rng)
        })
    });
    let (ct, proof) =
        validity::encrypt_with_proof(&mut transcript(&id, 1, b"b"), &public, 700, &mut rng)
            .unwrap();
    c.bench_function("submission: verify validity proof", |b| {
        b.iter(|| validity::verify(&mut transcript(&id, 1, b"b"), &public, &ct, &proof))
    });

    let o = Scalar::random(&mut rng) * G;
    c.bench_function("decryption: key-switch share + proof", |b| {
        b.iter(|| {
            keyswitch::key_switch(
                &mut transcript(&id, 1, b"k"),
                &x,
                &public,
                &ct,
                &o,
                &mut rng,
            )
        })
    });
    let share = keyswitch::key_switch(
        &mut transcript(&id, 1, b"k"),
        &x,
        &public,
        &ct,
        &o,
        &mut rng,
    );
    c.bench_function("decryption: verify key-switch share", |b| {
        b.iter(|| keyswitch::verify(&mut transcript(&id, 1, b"k"), &public, &ct, &o, &share))
    });

    dlog::warm_up();
    let sum = elgamal::encrypt(&public, 3000, &Scalar::from(5u64));
    let d = x * sum.c1;
    c.bench_function("decryption: combine 1 share + table lookup", |b| {
        b.iter(|| keyswitch::combine(&sum, &[(1, d)], 1).and_then(|p| dlog::small_dlog(&p)))
    });

    let k = Scalar::random(&mut rng);
    let blind = Blind::random(&mut rng);
    let blinded: Vec<_> = (0..64u32)
        .map(|i| oprf::blind(&i.to_be_bytes(), &blind).unwrap())
        .collect();
    c.bench_function("oprf: evaluate batch of 64 + DLEQ", |b| {
        b.iter(|| oprf::evaluate(&k, &blinded, &mut rng))
    });
    let (ev, p) = oprf::evaluate(&k, &blinded, &mut rng).unwrap();
    c.bench_function("oprf: verify batch of 64", |b| {
        b.iter(|| oprf::verify_evaluation(&(k * G), &blinded, &ev, &p))
    });

    // bLSAG at two ring sizes: the cost is linear in the ring.
    let tag = [3u8; 32];
    let ctx = RingContext {
        consortium: &id,
        epoch: 1,
        tag: &tag,
    };
    for n in [5usize, 64] {
        let keys: Vec<RingKey> = (0..n).map(|_| RingKey::random(&mut rng)).collect();
        let members: Vec<_> = keys.iter().map(RingKey::public).collect();
        c.bench_function(&format!("ring: sign, ring of {n}"), |b| {
            b.iter(|| ring::sign(&ctx, 7, &members, 1, &keys[1], b"record", &mut rng))
        });
        let sig = ring::sign(&ctx, 7, &members, 1, &keys[1], b"record", &mut rng).unwrap();
        c.bench_function(&format!("ring: verify, ring of {n}"), |b| {
            b.iter(|| ring::verify(&ctx, 100, &members, b"record", &sig))
        });
    }
    // Onion packets: what a sender pays per packet for a path of 2 and of 4 hops, and what
    // one hop pays to open one layer.
    let secrets: Vec<x25519_sphinx::StaticSecret> = (0..4u8)
        .map(|i| x25519_sphinx::StaticSecret::from([i + 1; 32]))
        .collect();
    let hops: Vec<packet::Hop> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| packet::Hop {
            member: i as u16 + 2,
            key: x25519_sphinx::PublicKey::from(s).to_bytes(),
        })
        .collect();
    let message = packet::Message::Record(vec![7; 1192]);
    for n in [2usize, 4] {
        let delays = vec![10; n];
        c.bench_function(&format!("onion: build, {n} hops"), |b| {
            b.iter(|| packet::build(&hops[..n], &delays, &message, &mut rng))
        });
    }
    let bytes = packet::build(&hops[..2], &[10, 10], &message, &mut rng).unwrap();
    c.bench_function("onion: open one layer", |b| {
        b.iter(|| packet::open(&bytes, &secrets[0]))
    });

    // Keys per epoch: every epoch runs two such DKG runs; a member's share of the work is
    // about 1/n of one run's total.
    for n in [5u16, 16] {
        let t = n / 2 + 1;
        c.bench_function(&format!("setup: one FROST DKG run, all {n} members"), |b| {
            b.iter(|| dkg_run(n, t, &mut rng))
        });
    }
}

/// One FROST DKG run among `n` members with threshold `t`, every member's three parts.
fn dkg_run(n: u16, t: u16, rng: &mut ChaCha20Rng) {
    use frost_ristretto255::keys::dkg;
    use frost_ristretto255::Identifier;
    use std::collections::BTreeMap;
    let ids: Vec<Identifier> = (1..=n).map(|i| Identifier::try_from(i).unwrap()).collect();
    let mut secrets1 = BTreeMap::new();
    let mut packages1 = BTreeMap::new();
    for &id in &ids {
        let (secret, package) = dkg::part1(id, n, t, &mut *rng).unwrap();
        secrets1.insert(id, secret);
        packages1.insert(id, package);
    }
    let mut secrets2 = BTreeMap::new();
    let mut sent: BTreeMap<Identifier, BTreeMap<Identifier, dkg::round2::Package>> =
        BTreeMap::new();
    for &id in &ids {
        let others: BTreeMap<_, _> = packages1
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let (secret, packages) = dkg::part2(secrets1.remove(&id).unwrap(), &others).unwrap();
        secrets2.insert(id, secret);
        for (to, p) in packages {
            sent.entry(to).or_default().insert(id, p);
        }
    }
    for &id in &ids {
        let others: BTreeMap<_, _> = packages1
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        dkg::part3(&secrets2[&id], &others, &sent[&id]).unwrap();
    }
}

criterion_group! {
    name = crypto;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(crypto);
