//! The libp2p side of a node (DESIGN 7): TCP + Noise + Yamux and QUIC, gossipsub with manual validation
//! for records, request/response for OPRF and sync, and an allow-list of member PeerIds.

use std::time::Duration;

use anyhow::{Context, Result};
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::record::MAX_RECORD_BYTES;
use bankmesh_protocol::{MemberIndex, MemberSecrets};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, identity, noise, ping, tcp, yamux, PeerId, StreamProtocol, Swarm,
    SwarmBuilder,
};
use sha2::{Digest, Sha256};

/// Direct-message protocol name.
const DIRECT_PROTOCOL: &str = "/bankmesh/direct/1";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    pub gossipsub: gossipsub::Behaviour,
    pub direct: request_response::cbor::Behaviour<Request, Response>,
    /// Liveness of connections, and what the responsiveness bench measures.
    pub ping: ping::Behaviour,
}

/// The libp2p keypair of a member: its ed25519 identity key (DESIGN 2: also its PeerId).
pub fn keypair(secrets: &MemberSecrets) -> Result<identity::Keypair> {
    identity::Keypair::ed25519_from_bytes(secrets.identity().to_bytes()).context("identity key")
}

/// The PeerId of a member's ed25519 identity key.
pub fn peer_id_of(identity: &[u8; 32]) -> Result<PeerId> {
    let public = identity::ed25519::PublicKey::try_from_bytes(identity).context("identity key")?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

/// The gossip topic of a consortium: records of one consortium never mix with another's.
pub fn topic(consortium_id: &[u8; 32]) -> IdentTopic {
    IdentTopic::new(format!("bankmesh/{}/records", hex::encode(consortium_id)))
}

/// Builds a swarm for `secrets`, not yet listening or subscribed.
pub fn build_swarm(secrets: &MemberSecrets, members: usize) -> Result<Swarm<Behaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(keypair(secrets)?)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_behaviour(|key| {
            // DESIGN 7 pitfalls: mesh degrees from n, flood publishing, content-hash ids, a
            // deliberate size limit, and manual validation so nothing invalid is forwarded.
            let peers = members.saturating_sub(1).max(1);
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::Strict)
                .validate_messages()
                .message_id_fn(|m: &gossipsub::Message| {
                    MessageId::from(Sha256::digest(&m.data).to_vec())
                })
                .max_transmit_size(MAX_RECORD_BYTES + 4096)
                .mesh_n(peers.min(6))
                .mesh_n_low(1)
                .mesh_n_high(peers.max(6))
                .mesh_outbound_min(0)
                .gossip_lazy(peers.min(6))
                .flood_publish(true)
                .heartbeat_interval(Duration::from_millis(500))
                .build()
                .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
            let gossipsub =
                gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
                    .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
            let codec_config =
                request_response::Config::default().with_request_timeout(Duration::from_secs(60));
            let direct = request_response::cbor::Behaviour::new(
                [(StreamProtocol::new(DIRECT_PROTOCOL), ProtocolSupport::Full)],
                codec_config,
            );
            Ok(Behaviour {
                allow: allow_block_list::Behaviour::default(),
                gossipsub,
                direct,
                ping: ping::Behaviour::new(ping::Config::new()),
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// Gossipsub peer scoring (issue 6): a member whose messages fail validation loses score, and
/// under the thresholds its gossip is ignored, then it is graylisted, until the count decays.
/// Only invalid messages count (P4); mesh delivery rates (P3), broken promises (P7) and slowness
/// are off, since a small consortium's traffic comes in bursts and would penalize honest
/// members under load. One invalid message
/// weighs -10 (the gossip threshold); the count is squared, so three put a member past the
/// graylist threshold (-80); it halves every second, so an honest member that relayed one
/// record another member judged differently (a clock at the edge of a window) recovers within
/// seconds, and a member that keeps sending invalid records stays out.
pub fn enable_scoring(gossipsub: &mut gossipsub::Behaviour, topic: &IdentTopic) -> Result<()> {
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.5,
        ..gossipsub::TopicScoreParams::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        // Members are few and known; several on one host (the demo) is normal.
        ip_colocation_factor_weight: 0.0,
        // Broken IWANT promises and slow peers are what a loaded honest member looks like (the
        // demo's five banks on two cores graylisted each other and lost submissions): only
        // invalid messages count.
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        decay_interval: Duration::from_secs(1),
        ..gossipsub::PeerScoreParams::default()
    };
    params.topics.insert(topic.hash(), topic_params);
    gossipsub
        .with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| anyhow::anyhow!("gossipsub peer scoring: {e}"))
}

/// Maps member PeerIds to indices and back.
pub struct Members {
    peers: Vec<(MemberIndex, PeerId)>,
}

impl Members {
    pub fn new(consortium: &Consortium) -> Result<Members> {
        let peers = consortium
            .genesis
            .members
            .iter()
            .map(|m| Ok((m.index, peer_id_of(&m.identity)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Members { peers })
    }
    pub fn index(&self, peer: &PeerId) -> Option<MemberIndex> {
        self.peers.iter().find(|(_, p)| p == peer).map(|(i, _)| *i)
    }
    pub fn peer(&self, index: MemberIndex) -> Option<PeerId> {
        self.peers
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, p)| *p)
    }
    pub fn all(&self) -> impl Iterator<Item = (MemberIndex, PeerId)> + '_ {
        self.peers.iter().copied()
    }
}
