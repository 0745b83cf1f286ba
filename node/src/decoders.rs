//! Every decoder of bytes that come from peers or files, behind one harness: gossip records,
//! direct messages (the request/response codec's CBOR), onion packets, the genesis, store
//! entries and score files. The fuzz targets under `fuzz/` and the stable fuzz test
//! (`node/tests/fuzz_decoders.rs`) both drive it. Each entry point takes arbitrary bytes and
//! returns: bad input is refused, never a panic.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use bankmesh_protocol::genesis::{Consortium, Genesis};
use bankmesh_protocol::local::{LocalEntry, Restored};
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::record::Payload;
use bankmesh_protocol::{Bank, MemberIndex, MemberSecrets, Origin, Record, Time, UncheckedRecord};
use bankmesh_store::replica::Replica;
use bankmesh_store::Store;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

/// The decoders a fuzz input can be fed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Record,
    Direct,
    Onion,
    Genesis,
    StoreEntry,
    Scores,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Record,
        Target::Direct,
        Target::Onion,
        Target::Genesis,
        Target::StoreEntry,
        Target::Scores,
    ];
}

/// One member's node as a peer sees it: a replica of a consortium whose members' keys the
/// harness holds, so that mutated records can be signed again and reach the checks of their
/// bodies (a fuzzer cannot forge a signature).
pub struct Harness {
    consortium: Arc<Consortium>,
    secrets: Vec<MemberSecrets>,
    replica: Replica,
    rng: ChaCha20Rng,
    now: Time,
}

/// The member whose node the harness runs.
const ME: MemberIndex = 1;

impl Harness {
    /// A five-member consortium with seeded keys, in its first epoch's submission window.
    pub fn seeded() -> Result<Harness> {
        let mut rng = ChaCha20Rng::seed_from_u64(0x6675_7a7a);
        let secrets: Vec<MemberSecrets> =
            (0..5).map(|_| MemberSecrets::generate(&mut rng)).collect();
        let members = secrets
            .iter()
            .zip(1u16..)
            .map(|(s, i)| s.member_info(i, &format!("bank-{i}"), vec![]))
            .collect();
        let timing =
            bankmesh_protocol::genesis::Timing::new(0, 30_000, 60_000, 20_000, 30_000, 10_000);
        let consortium = Consortium::new(Genesis::new("fuzz", 3, timing, members))?;
        Harness::new(consortium, secrets)
    }

    /// A harness for `consortium`, running member 1 with `secrets[0]`.
    pub fn new(consortium: Consortium, secrets: Vec<MemberSecrets>) -> Result<Harness> {
        let consortium = Arc::new(consortium);
        let mine = secrets
            .first()
            .and_then(|s| MemberSecrets::from_bytes(&s.to_bytes()))
            .ok_or_else(|| anyhow::anyhow!("no member secrets"))?;
        let bank = Bank::new(Arc::clone(&consortium), ME, mine);
        let replica = Replica::open(bank, Store::temporary()?)?;
        let now = consortium.epoch_start(1).plus(1_000);
        let mut h = Harness {
            consortium,
            secrets,
            replica,
            rng: ChaCha20Rng::seed_from_u64(1),
            now,
        };
        let step = h.replica.resume(h.now, &mut h.rng)?;
        drop(step);
        Ok(h)
    }

    pub fn consortium(&self) -> &Consortium {
        &self.consortium
    }

    /// Feeds `data` to one decoder.
    pub fn feed(&mut self, target: Target, data: &[u8]) {
        match target {
            Target::Record => self.record(data),
            Target::Direct => self.direct(data),
            Target::Onion => self.onion(data),
            Target::Genesis => genesis(data),
            Target::StoreEntry => store_entry(data),
            Target::Scores => scores(data),
        }
    }

    /// A record from gossip; if it decodes as an identified record, also the same body signed
    /// again by its claimed author, so that the checks behind the signature run too.
    pub fn record(&mut self, data: &[u8]) {
        let _ = self.replica.ingest(
            self.now,
            vec![(Origin::Gossip { from: 2 }, data.to_vec())],
            &mut self.rng,
        );
        let Ok(unchecked) = UncheckedRecord::decode(data) else {
            return;
        };
        let Payload::Identified(i) = &unchecked.envelope().payload else {
            return;
        };
        let Some(key) = usize::from(i.author)
            .checked_sub(1)
            .and_then(|k| self.secrets.get(k))
        else {
            return;
        };
        let signed = Record::identified(
            &self.consortium.id,
            key.identity(),
            i.author,
            i.seq,
            i.prev,
            i.body.clone(),
        );
        let _ = self.replica.ingest(
            self.now,
            vec![(Origin::Gossip { from: i.author }, signed.bytes().to_vec())],
            &mut self.rng,
        );
    }

    /// A direct message as the request/response codec decodes it: as a request to us and as a
    /// response to one of ours.
    pub fn direct(&mut self, data: &[u8]) {
        if let Ok(request) = cbor4ii::serde::from_slice::<Request>(data) {
            let _ = self
                .replica
                .handle_request(self.now, 2, request, &mut self.rng);
        }
        if let Ok(response) = cbor4ii::serde::from_slice::<Response>(data) {
            let _ = self
                .replica
                .handle_response(self.now, 2, response, &mut self.rng);
        }
    }

    /// An onion packet handed to us to relay.
    pub fn onion(&mut self, data: &[u8]) {
        let request = Request::Onion {
            packet: data.to_vec(),
        };
        let _ = self
            .replica
            .handle_request(self.now, 2, request, &mut self.rng);
    }
}

/// A genesis file as `consortium.toml` holds it.
pub fn genesis(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(g) = Genesis::from_toml(text) {
            let _ = Consortium::new(g);
        }
    }
}

/// A store entry: the first byte is the key's length, then the key, then the value. Decoded
/// as a log entry and as a local-state entry.
pub fn store_entry(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(len).min(rest.len()));
    let _ = bankmesh_store::check_entry(key, value);
    let entry: LocalEntry = (
        String::from_utf8_lossy(key).into_owned(),
        Zeroizing::new(value.to_vec()),
    );
    let _ = Restored::parse(&[entry]);
}

/// A score file as an operator gives it.
pub fn scores(data: &[u8]) {
    let _ = crate::inputs::parse_scores(Path::new("scores.csv"), data);
}
