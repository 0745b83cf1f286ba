#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::packet::{self, Hop, Message, Opened, PacketError, PACKET_BYTES};
use super::*;
use crate::genesis::{Genesis, Timing};
use crate::keys::MemberSecrets;

fn consortium(n: usize, seed: u64) -> (Consortium, Vec<MemberSecrets>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let secrets: Vec<MemberSecrets> = (0..n).map(|_| MemberSecrets::generate(&mut rng)).collect();
    let members = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| s.member_info(i as u16 + 1, &format!("bank-{}", i + 1), vec![]))
        .collect();
    let timing = Timing::new(1_000, 60_000, 600_000, 300_000, 60_000, 120_000);
    let c = Consortium::new(Genesis::new("relay-test", 2, timing, members)).unwrap();
    (c, secrets)
}

fn key(s: &MemberSecrets) -> x25519_sphinx::StaticSecret {
    packet::onion_secret(s.x25519())
}

fn hops(c: &Consortium, members: &[MemberIndex]) -> Vec<Hop> {
    members
        .iter()
        .map(|&m| Hop {
            member: m,
            key: c.x25519(m).unwrap().to_bytes(),
        })
        .collect()
}

fn record() -> Message {
    Message::Record(vec![7u8; 1192])
}

#[test]
fn onion_packet_size_is_equal_at_every_hop() {
    let (c, s) = consortium(5, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    // A 348-byte header (group element, MAC, routing information for up to 5 hops) and the
    // 2,048-byte payload.
    assert_eq!(PACKET_BYTES, 2396);
    for message in [record(), Message::Cover] {
        let mut bytes =
            packet::build(&hops(&c, &[2, 3, 4]), &[5, 6, 7], &message, &mut rng).unwrap();
        for m in [2u16, 3] {
            assert_eq!(bytes.len(), PACKET_BYTES);
            let (_, opened) = packet::open(&bytes, &key(&s[usize::from(m) - 1])).unwrap();
            let Opened::Forward { next, packet, .. } = opened else {
                panic!("hop {m} is not the exit")
            };
            assert_eq!(next, m + 1);
            bytes = packet;
        }
        assert_eq!(bytes.len(), PACKET_BYTES);
        let (_, opened) = packet::open(&bytes, &key(&s[3])).unwrap();
        assert_eq!(opened, Opened::Exit(message));
    }
}

#[test]
fn onion_hops_learn_the_delays_their_sender_chose() {
    let (c, s) = consortium(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let bytes = packet::build(&hops(&c, &[2, 3]), &[120, 0], &record(), &mut rng).unwrap();
    let (_, opened) = packet::open(&bytes, &key(&s[1])).unwrap();
    let Opened::Forward { delay_ms, next, .. } = opened else {
        panic!("not forwarded")
    };
    assert_eq!((next, delay_ms), (3, 120));
}

#[test]
fn onion_replayed_packet_is_dropped() {
    let (c, s) = consortium(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let bytes = packet::build(&hops(&c, &[2, 3]), &[10, 10], &record(), &mut rng).unwrap();
    let mut relay = Relay::new(2);
    let k = key(&s[1]);
    assert_eq!(
        relay.receive(&c, Time(0), 1, &bytes, &k, &mut rng),
        Received::Held
    );
    assert_eq!(
        relay.receive(&c, Time(5), 1, &bytes, &k, &mut rng),
        Received::Dropped("replayed packet")
    );
    // From another predecessor, with the payload changed: still the same packet.
    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 1;
    assert_eq!(
        relay.receive(&c, Time(6), 4, &changed, &k, &mut rng),
        Received::Dropped("replayed packet")
    );
    assert_eq!(relay.stats().dropped_replay, 2);
    let (forwarded, _) = relay.poll(&c, Time(1_000), false, &mut rng);
    assert_eq!(forwarded.len(), 1, "the first copy goes on, once");
}

#[test]
fn onion_tampered_header_is_rejected_at_its_hop() {
    let (c, s) = consortium(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let bytes = packet::build(&hops(&c, &[2, 3]), &[10, 10], &record(), &mut rng).unwrap();
    let header = sphinx_packet::header::HEADER_SIZE;
    // Every byte of the routing information and its MAC (the group element is checked by the
    // MAC too: a changed one gives another shared secret).
    for i in (0..header).step_by(7) {
        let mut t = bytes.clone();
        t[i] ^= 0x40;
        assert!(
            packet::open(&t, &key(&s[1])).is_err(),
            "header byte {i} changed and the packet still opened"
        );
    }
    assert_eq!(
        packet::open(&bytes[..100], &key(&s[1])),
        Err(PacketError::Size(100))
    );
    // At the wrong hop it does not open either.
    assert!(packet::open(&bytes, &key(&s[2])).is_err());
}

#[test]
fn onion_tampered_payload_never_yields_an_accepted_record() {
    let (c, s) = consortium(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let bytes = packet::build(&hops(&c, &[2, 3]), &[10, 10], &record(), &mut rng).unwrap();
    let header = sphinx_packet::header::HEADER_SIZE;
    for i in (header..PACKET_BYTES).step_by(97) {
        let mut t = bytes.clone();
        t[i] ^= 1;
        let (_, opened) = packet::open(&t, &key(&s[1])).unwrap();
        let Opened::Forward { packet: next, .. } = opened else {
            panic!("not forwarded")
        };
        // The payload is one wide block (Lioness): a changed bit garbles all of it, and the
        // exit finds no message in it.
        match packet::open(&next, &key(&s[2])) {
            Err(PacketError::Payload(_)) => {}
            other => panic!("payload byte {i} changed, and the exit got {other:?}"),
        }
    }
}

#[test]
fn onion_intermediate_hop_holds_the_same_for_two_senders() {
    let (c, s) = consortium(5, 1);
    // Member 1 and member 5 each send through hop 2 to exit 3: what hop 2 holds after opening
    // (the successor, the delay, a packet of one size) does not name the sender.
    let mut views = Vec::new();
    for sender_seed in [10u64, 11] {
        let mut rng = ChaCha20Rng::seed_from_u64(sender_seed);
        let bytes = packet::build(&hops(&c, &[2, 3]), &[40, 0], &record(), &mut rng).unwrap();
        let mut relay = Relay::new(2);
        let from = if sender_seed == 10 { 1 } else { 5 };
        assert_eq!(
            relay.receive(&c, Time(0), from, &bytes, &key(&s[1]), &mut rng),
            Received::Held
        );
        let (out, exits) = relay.poll(&c, Time(40), false, &mut rng);
        assert!(exits.is_empty());
        let [(next, Request::Onion { packet })] = out.as_slice() else {
            panic!("one packet forwarded")
        };
        views.push((*next, packet.len()));
        // Nothing in what is forwarded carries the sender's keys.
        let sender = &c.genesis.members[usize::from(from) - 1];
        for k in [sender.identity, sender.x25519, sender.ring] {
            assert!(!packet.windows(32).any(|w| w == k));
        }
    }
    assert_eq!(views[0], views[1]);
    assert_eq!(views[0], (3, PACKET_BYTES));
}

#[test]
fn onion_rate_limit_drops_and_counts() {
    let (mut c, s) = consortium(4, 1);
    c.genesis.privacy.relay_rate = 3;
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut relay = Relay::new(2);
    let k = key(&s[1]);
    let mut held = 0;
    for _ in 0..5 {
        let b = packet::build(&hops(&c, &[2, 3]), &[1, 1], &Message::Cover, &mut rng).unwrap();
        if relay.receive(&c, Time(0), 1, &b, &k, &mut rng) == Received::Held {
            held += 1;
        }
    }
    assert_eq!(held, 3);
    assert_eq!(relay.stats().dropped_rate, 2);
    // A second later the bucket is full again; another predecessor has its own.
    let b = packet::build(&hops(&c, &[2, 3]), &[1, 1], &Message::Cover, &mut rng).unwrap();
    assert_eq!(
        relay.receive(&c, Time(1_000), 1, &b, &k, &mut rng),
        Received::Held
    );
    let b = packet::build(&hops(&c, &[2, 3]), &[1, 1], &Message::Cover, &mut rng).unwrap();
    assert_eq!(
        relay.receive(&c, Time(0), 4, &b, &k, &mut rng),
        Received::Held
    );
}

#[test]
fn onion_exit_hands_records_to_the_bank_and_drops_covers() {
    let (c, s) = consortium(4, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut relay = Relay::new(3);
    let k = key(&s[2]);
    let real = packet::build(&hops(&c, &[3]), &[0], &record(), &mut rng).unwrap();
    let cover = packet::build(&hops(&c, &[3]), &[0], &Message::Cover, &mut rng).unwrap();
    assert_eq!(
        relay.receive(&c, Time(0), 2, &real, &k, &mut rng),
        Received::Held
    );
    assert_eq!(
        relay.receive(&c, Time(0), 2, &cover, &k, &mut rng),
        Received::Dropped("cover")
    );
    let cap = c.genesis.privacy.mix_delay_ms * DELAY_CAP_MEANS;
    let (out, exits) = relay.poll(&c, Time(cap), false, &mut rng);
    assert!(out.is_empty());
    assert_eq!(exits, vec![vec![7u8; 1192]]);
}

#[test]
fn onion_sender_sends_one_packet_per_tick_whatever_it_has_queued() {
    let (c, _) = consortium(5, 1);
    let tick = c.genesis.privacy.packet_ms;
    let mut counts = Vec::new();
    for queued in [0usize, 3, 40] {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut relay = Relay::new(1);
        for i in 0..queued {
            relay.queue(1, [i as u8; 32], vec![i as u8; 1192]);
        }
        let mut sent = 0;
        for t in 0..100u64 {
            let (out, _) = relay.poll(&c, Time(t * tick), true, &mut rng);
            for (to, r) in &out {
                assert_ne!(*to, 1, "never to ourselves");
                let Request::Onion { packet } = r else {
                    panic!()
                };
                assert_eq!(packet.len(), PACKET_BYTES);
            }
            sent += out.len();
        }
        let st = relay.stats();
        assert_eq!(st.sent_real as usize, queued);
        counts.push(sent);
    }
    assert_eq!(counts, vec![100, 100, 100]);
}

#[test]
fn onion_unseen_record_is_resent_by_another_exit() {
    let (c, s) = consortium(5, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let mut relay = Relay::new(1);
    relay.queue(1, [1; 32], vec![1; 1192]);
    // The exit of a two-hop packet is the successor its first hop learns.
    let exit_of = |out: &[(MemberIndex, Request)]| -> MemberIndex {
        let [(first, Request::Onion { packet })] = out else {
            panic!()
        };
        let (_, opened) = packet::open(packet, &key(&s[usize::from(*first) - 1])).unwrap();
        let Opened::Forward { next, .. } = opened else {
            panic!()
        };
        next
    };
    let (out, _) = relay.poll(&c, Time(0), true, &mut rng);
    let first_exit = exit_of(&out);
    // Not seen on the log in time: it goes again, by another exit.
    let later = Time(60_000);
    let (out, _) = relay.poll(&c, later, true, &mut rng);
    assert_eq!(relay.stats().resent, 1);
    assert_ne!(exit_of(&out[..1]), first_exit);
    // Once seen, never again.
    relay.seen(&[1; 32]);
    let (_, _) = relay.poll(&c, Time(200_000), true, &mut rng);
    assert_eq!(relay.stats().sent_real, 2);
    assert_eq!(relay.unconfirmed(), 0);
}

#[test]
fn onion_paths_avoid_the_origin_and_repeat_no_member() {
    let (c, _) = consortium(6, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    for _ in 0..200 {
        let p = choose_path(&c, 4, 3, &[], &mut rng).unwrap();
        let m: std::collections::BTreeSet<MemberIndex> = p.iter().map(|h| h.member).collect();
        assert_eq!(m.len(), 3);
        assert!(!m.contains(&4));
    }
    assert!(choose_path(&c, 4, 6, &[], &mut rng).is_none());
}
