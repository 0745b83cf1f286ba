//! Onion packets (DESIGN 6): Sphinx (Danezis and Goldberg 2009) as nymtech's `sphinx-packet`
//! implements it, with a fixed payload size so that every packet has the same length at every
//! hop. A hop learns its predecessor (from the transport), its successor and its delay; the
//! exit learns the message and nothing of the path before it.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
use sphinx_packet::{ProcessedPacketData, SphinxPacket, SphinxPacketBuilder};
use x25519_sphinx::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::record::MAX_RECORD_BYTES;
use crate::MemberIndex;

/// Bytes of a packet's payload: a submission record (about 1.2 KiB) with room to spare.
pub const PAYLOAD_BYTES: usize = 2048;
/// Bytes of every packet on the wire, at every hop.
pub const PACKET_BYTES: usize = sphinx_packet::header::HEADER_SIZE + PAYLOAD_BYTES;
/// Most hops a path may have (the Sphinx header's room).
pub const MAX_HOPS: usize = sphinx_packet::constants::MAX_PATH_LENGTH;

/// What the exit of a path finds inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Cover traffic (Loopix "drop" messages): the exit discards it.
    Cover,
    /// A record the exit verifies and publishes.
    Record(Vec<u8>),
}

/// A packet opened by one hop.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Hold for `delay_ms`, then send `packet` to `next`.
    Forward {
        next: MemberIndex,
        delay_ms: u64,
        packet: Vec<u8>,
    },
    /// We are the exit.
    Exit(Message),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("packet of {0} bytes; packets are {PACKET_BYTES}")]
    Size(usize),
    #[error("the path must have 1..={MAX_HOPS} hops")]
    Path,
    #[error("the message does not fit a packet")]
    TooLarge,
    #[error("header: {0}")]
    Header(String),
    #[error("payload: {0}")]
    Payload(String),
    #[error("next hop {0} is not a member")]
    NextHop(String),
}

/// The address of a member in a header: its index, big-endian, then zeros.
fn address(m: MemberIndex) -> NodeAddressBytes {
    let mut a = [0u8; 32];
    a[..2].copy_from_slice(&m.to_be_bytes());
    NodeAddressBytes::from_bytes(a)
}

fn member_of(a: &NodeAddressBytes) -> Option<MemberIndex> {
    let b = a.as_bytes();
    if b[2..].iter().any(|&x| x != 0) {
        return None;
    }
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// The single destination: "publish to gossip". Exits tell covers from records by the message.
fn destination() -> Destination {
    Destination::new(
        DestinationAddressBytes::from_bytes(*b"bankmesh.relay.exit.v1\0\0\0\0\0\0\0\0\0\0"),
        [0u8; 16],
    )
}

/// A hop of a path: the member and its onion key.
#[derive(Clone, Copy, Debug)]
pub struct Hop {
    pub member: MemberIndex,
    pub key: [u8; 32],
}

/// Wraps `message` for `path` (first hop first, the exit last); `delays_ms[i]` is how long hop
/// `i` holds the packet. The packet's secrets come from `rng`.
pub fn build(
    path: &[Hop],
    delays_ms: &[u64],
    message: &Message,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, PacketError> {
    if path.is_empty() || path.len() > MAX_HOPS || delays_ms.len() != path.len() {
        return Err(PacketError::Path);
    }
    let body = postcard::to_stdvec(message).map_err(|_| PacketError::TooLarge)?;
    if body.len() > PAYLOAD_BYTES - sphinx_packet::payload::PAYLOAD_OVERHEAD_SIZE {
        return Err(PacketError::TooLarge);
    }
    let route: Vec<Node> = path
        .iter()
        .map(|h| Node::new(address(h.member), PublicKey::from(h.key)))
        .collect();
    let delays: Vec<Delay> = delays_ms
        .iter()
        .map(|&d| Delay::new_from_millis(d))
        .collect();
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut());
    let initial = StaticSecret::from(*seed);
    let packet = SphinxPacketBuilder::new()
        .with_payload_size(PAYLOAD_BYTES)
        .with_initial_secret(&initial)
        .build_packet(&body, &route, &destination(), &delays)
        .map_err(|e| PacketError::Header(e.to_string()))?;
    let bytes = packet.to_bytes();
    debug_assert_eq!(bytes.len(), PACKET_BYTES);
    Ok(bytes)
}

/// The tag a hop remembers to refuse a replay: a hash of the packet's shared secret, the same
/// however the rest of the packet is changed.
pub type ReplayTag = [u8; 32];

/// Opens one layer with our onion key. Returns the replay tag with the result; the caller
/// checks the tag before acting on the result.
pub fn open(bytes: &[u8], key: &StaticSecret) -> Result<(ReplayTag, Opened), PacketError> {
    if bytes.len() != PACKET_BYTES {
        return Err(PacketError::Size(bytes.len()));
    }
    let packet = SphinxPacket::from_bytes(bytes).map_err(|e| PacketError::Header(e.to_string()))?;
    let secret = packet.header.compute_expanded_shared_secret(key);
    let tag = *secret.replay_tag();
    let processed = packet
        .process_with_expanded_secret(&secret)
        .map_err(|e| PacketError::Header(e.to_string()))?;
    let opened = match processed.data {
        ProcessedPacketData::ForwardHop {
            next_hop_packet,
            next_hop_address,
            delay,
        } => Opened::Forward {
            next: member_of(&next_hop_address)
                .ok_or_else(|| PacketError::NextHop(next_hop_address.as_base58_string()))?,
            delay_ms: delay.to_nanos() / 1_000_000,
            packet: next_hop_packet.to_bytes(),
        },
        ProcessedPacketData::FinalHop { payload, .. } => {
            let body = payload
                .recover_plaintext()
                .map_err(|e| PacketError::Payload(e.to_string()))?;
            if body.len() > MAX_RECORD_BYTES {
                return Err(PacketError::TooLarge);
            }
            let message =
                postcard::from_bytes(&body).map_err(|e| PacketError::Payload(e.to_string()))?;
            Opened::Exit(message)
        }
    };
    Ok((tag, opened))
}

/// Our onion key in the form the Sphinx library takes.
pub fn onion_secret(x25519: &x25519_dalek::StaticSecret) -> StaticSecret {
    StaticSecret::from(x25519.to_bytes())
}
