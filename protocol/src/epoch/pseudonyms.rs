//! Pseudonyms, the OPRF client (DESIGN 3, 4.2): blind each client id, ask the pseudonym key's
//! holders for partial evaluations with proofs, verify each against its verifying share,
//! combine `t` of them and unblind to the client's OPRF output.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::crypto::oprf::{self, BatchContext, Blind, DleqProof};
use crate::crypto::CryptoError;
use crate::messages::{Request, OPRF_BATCH_MAX};
use crate::step::{Fault, FaultKind};
use crate::time::Time;
use crate::MemberIndex;

use super::values::Client;

/// The client position of a padding element (no client has it).
const PADDING: usize = usize::MAX;

/// Wait before asking members that have not answered a batch again.
const RETRY_MS: u64 = 500;

/// The pseudonym key as the OPRF client sees it.
pub struct OprfKeys<'a> {
    /// The consortium id (partial evaluations' proofs are bound to it).
    pub consortium: &'a [u8; 32],
    pub me: MemberIndex,
    /// Our share of `k`, if we hold one.
    pub share: Option<&'a Scalar>,
    /// The verifying share `K_i` of every holder.
    pub verifying: &'a BTreeMap<MemberIndex, RistrettoPoint>,
    pub threshold: usize,
}

struct Batch {
    clients: Vec<usize>,
    blinds: Vec<Blind>,
    blinded: Vec<RistrettoPoint>,
    partials: BTreeMap<MemberIndex, Vec<RistrettoPoint>>,
    /// Evaluators whose answer came after the batch was done, verified once each.
    late: BTreeSet<MemberIndex>,
    done: bool,
    asked_at: Time,
}

/// What one input produced.
#[derive(Default)]
pub struct Lookup {
    pub requests: Vec<(MemberIndex, Request)>,
    /// OPRF outputs now known, by client position.
    pub ready: Vec<(usize, Zeroizing<[u8; 64]>)>,
    pub faults: Vec<Fault>,
    /// Our own clients cannot get pseudonyms (a local failure, not a peer's).
    pub error: Option<String>,
}

pub struct Pseudonyms {
    epoch: u64,
    /// By batch id: drawn afresh at every start, so a late answer to a batch asked before a
    /// restart is not taken for one of now.
    batches: BTreeMap<u32, Batch>,
    started: bool,
}

impl Pseudonyms {
    pub fn new(epoch: u64) -> Pseudonyms {
        Pseudonyms {
            epoch,
            batches: BTreeMap::new(),
            started: false,
        }
    }

    pub fn started(&self) -> bool {
        self.started
    }
    /// The blinded elements of a batch we asked for.
    pub fn blinded(&self, batch: u32) -> Option<&[RistrettoPoint]> {
        self.batches.get(&batch).map(|b| b.blinded.as_slice())
    }

    /// Whether some batch still waits for answers.
    pub fn pending(&self) -> bool {
        self.batches.values().any(|b| !b.done)
    }

    /// Blinds the clients in `missing` and asks every other holder of `k` (DESIGN 4.2). The
    /// request is padded with random inputs to a multiple of `bucket`, so that what evaluators
    /// see of our number of clients is its bucket (DESIGN 6).
    pub fn start(
        &mut self,
        keys: &OprfKeys<'_>,
        clients: &[Client],
        missing: &[usize],
        bucket: usize,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Lookup {
        let mut out = Lookup::default();
        self.started = true;
        if keys.verifying.len() < keys.threshold {
            out.error = Some("fewer pseudonym key holders than the threshold".into());
            return out;
        }
        let base = rng.next_u32();
        let padded = missing.len().div_ceil(bucket.max(1)) * bucket.max(1);
        let mut positions = missing.to_vec();
        positions.resize(padded, PADDING);
        for (i, chunk) in positions.chunks(OPRF_BATCH_MAX).enumerate() {
            let mut blinds = Vec::new();
            let mut blinded = Vec::new();
            for &i in chunk {
                // A padding element is a random input: its output is never used.
                let input = match clients.get(i) {
                    Some(client) => client.id.as_bytes().to_vec(),
                    None => {
                        let mut r = [0u8; 32];
                        rng.fill_bytes(&mut r);
                        r.to_vec()
                    }
                };
                let blind = Blind::random(rng);
                match oprf::blind(&input, &blind) {
                    Ok(p) => {
                        blinds.push(blind);
                        blinded.push(p);
                    }
                    Err(e) => {
                        out.error = Some(format!("blinding a client id: {e}"));
                        return out;
                    }
                }
            }
            let mut partials = BTreeMap::new();
            if let Some(share) = keys.share {
                let ctx = BatchContext {
                    consortium: keys.consortium,
                    epoch: self.epoch,
                    requester: keys.me,
                    evaluator: keys.me,
                };
                match oprf::evaluate_partial(share, &blinded, &ctx, rng) {
                    Ok((own, _)) => {
                        partials.insert(keys.me, own);
                    }
                    Err(e) => {
                        out.error = Some(format!("own OPRF evaluation: {e}"));
                        return out;
                    }
                }
            }
            let batch = base.wrapping_add(u32::try_from(i).unwrap_or(u32::MAX));
            for &peer in keys.verifying.keys().filter(|&&i| i != keys.me) {
                out.requests.push((
                    peer,
                    Request::OprfEvaluate {
                        epoch: self.epoch,
                        batch,
                        blinded: blinded.clone(),
                    },
                ));
            }
            self.batches.insert(
                batch,
                Batch {
                    clients: chunk.to_vec(),
                    blinds,
                    blinded,
                    partials,
                    late: BTreeSet::new(),
                    done: false,
                    asked_at: now,
                },
            );
        }
        self.finish(keys, clients, &mut out);
        out
    }

    /// Asks again the holders that have not answered a batch yet (a peer may have refused
    /// because its own key was not ready, or the request was lost).
    pub fn retry(&mut self, keys: &OprfKeys<'_>, now: Time) -> Vec<(MemberIndex, Request)> {
        let mut requests = Vec::new();
        for (&batch_id, batch) in self.batches.iter_mut().filter(|(_, b)| !b.done) {
            if now.0 < batch.asked_at.0 + RETRY_MS {
                continue;
            }
            batch.asked_at = now;
            for &peer in keys
                .verifying
                .keys()
                .filter(|i| **i != keys.me && !batch.partials.contains_key(i))
            {
                requests.push((
                    peer,
                    Request::OprfEvaluate {
                        epoch: self.epoch,
                        batch: batch_id,
                        blinded: batch.blinded.clone(),
                    },
                ));
            }
        }
        requests
    }

    /// Takes a peer's evaluation: verified against its verifying share, or its author named.
    pub fn response(
        &mut self,
        keys: &OprfKeys<'_>,
        clients: &[Client],
        from: MemberIndex,
        batch: u32,
        evaluated: Vec<RistrettoPoint>,
        proof: DleqProof,
    ) -> Lookup {
        let mut out = Lookup::default();
        let Some(b) = self.batches.get_mut(&batch) else {
            return out;
        };
        // A batch already done still has its late answers verified, so an evaluator whose bad
        // answer arrives after `t` good ones is named too. Answers come only to our requests,
        // so this costs at most one check per request sent, and once per evaluator late.
        if b.partials.contains_key(&from) || (b.done && !b.late.insert(from)) {
            return out;
        }
        let verified = keys
            .verifying
            .get(&from)
            .ok_or(CryptoError::BadShareIndex(from))
            .and_then(|ki| {
                let ctx = BatchContext {
                    consortium: keys.consortium,
                    epoch: self.epoch,
                    requester: keys.me,
                    evaluator: from,
                };
                oprf::verify_partial(ki, &b.blinded, &evaluated, &proof, &ctx)
            });
        if let Err(e) = verified {
            out.faults.push(Fault::member(
                from,
                FaultKind::BadOprfResponse,
                None,
                e.to_string(),
            ));
            return out;
        }
        if !b.done {
            b.partials.insert(from, evaluated);
            self.finish(keys, clients, &mut out);
        }
        out
    }

    /// Combines batches that have `t` proven partial evaluations into OPRF outputs.
    fn finish(&mut self, keys: &OprfKeys<'_>, clients: &[Client], out: &mut Lookup) {
        for b in self
            .batches
            .values_mut()
            .filter(|b| !b.done && b.partials.len() >= keys.threshold)
        {
            b.done = true;
            let chosen: Vec<(&MemberIndex, &Vec<RistrettoPoint>)> =
                b.partials.iter().take(keys.threshold).collect();
            for (pos, &client) in b.clients.iter().enumerate() {
                let parts: Vec<(u16, RistrettoPoint)> = chosen
                    .iter()
                    .filter_map(|(&i, ev)| ev.get(pos).map(|p| (i, *p)))
                    .collect();
                let (Some(c), Some(blind)) = (clients.get(client), b.blinds.get(pos)) else {
                    continue;
                };
                match oprf::combine(&parts) {
                    Ok(combined) => {
                        let y = oprf::finalize(c.id.as_bytes(), blind, &combined);
                        out.ready.push((client, Zeroizing::new(y)));
                    }
                    Err(e) => out.error = Some(format!("combining OPRF shares: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// A 2-of-3 pseudonym key by Shamir sharing of `k = 7`: f(x) = 7 + 5x.
    fn holders() -> (
        BTreeMap<MemberIndex, Scalar>,
        BTreeMap<MemberIndex, RistrettoPoint>,
    ) {
        let shares: BTreeMap<MemberIndex, Scalar> = (1..=3u16)
            .map(|i| {
                (
                    i,
                    Scalar::from(7u64) + Scalar::from(5u64) * Scalar::from(u64::from(i)),
                )
            })
            .collect();
        let verifying = shares.iter().map(|(&i, s)| (i, s * G)).collect();
        (shares, verifying)
    }

    fn clients() -> Vec<Client> {
        ["alice", "bob"]
            .iter()
            .map(|id| Client {
                id: id.to_string(),
                score: 1,
            })
            .collect()
    }

    /// Member `evaluator`'s answer with `share` to a request of member 1.
    fn answer(
        request: &Request,
        evaluator: MemberIndex,
        share: &Scalar,
        rng: &mut ChaCha20Rng,
    ) -> (u32, Vec<RistrettoPoint>, DleqProof) {
        answer_for(request, 1, evaluator, share, rng)
    }

    fn answer_for(
        request: &Request,
        requester: MemberIndex,
        evaluator: MemberIndex,
        share: &Scalar,
        rng: &mut ChaCha20Rng,
    ) -> (u32, Vec<RistrettoPoint>, DleqProof) {
        let Request::OprfEvaluate {
            epoch,
            batch,
            blinded,
        } = request
        else {
            panic!("not an OPRF request");
        };
        let ctx = BatchContext {
            consortium: &[0; 32],
            epoch: *epoch,
            requester,
            evaluator,
        };
        let (evaluated, proof) = oprf::evaluate_partial(share, blinded, &ctx, rng).unwrap();
        (*batch, evaluated, proof)
    }

    #[test]
    fn outputs_equal_the_single_key_oprf_and_a_bad_evaluator_is_named() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let (shares, verifying) = holders();
        let keys = OprfKeys {
            consortium: &[0; 32],
            me: 1,
            share: shares.get(&1),
            verifying: &verifying,
            threshold: 2,
        };
        let clients = clients();
        let mut p = Pseudonyms::new(3);
        let start = p.start(&keys, &clients, &[0, 1], 1, Time(0), &mut rng);
        assert!(start.ready.is_empty() && start.error.is_none());
        assert_eq!(start.requests.len(), 2, "members 2 and 3 are asked");
        // Member 3 answers with member 2's share: its proof does not hold against K_3.
        let to3 = &start.requests.iter().find(|(m, _)| *m == 3).unwrap().1;
        let (batch, evaluated, proof) = answer(to3, 3, shares.get(&2).unwrap(), &mut rng);
        let bad = p.response(&keys, &clients, 3, batch, evaluated, proof);
        assert_eq!(bad.faults.len(), 1);
        assert_eq!(bad.faults[0].culprit, crate::step::Culprit::Member(3));
        assert!(bad.ready.is_empty());
        assert!(p.pending());
        // Retry asks member 3 (and 2) again after a pause.
        assert!(p.retry(&keys, Time(10)).is_empty());
        assert_eq!(p.retry(&keys, Time(RETRY_MS)).len(), 2);
        let to2 = &start.requests.iter().find(|(m, _)| *m == 2).unwrap().1;
        // Member 2's evaluation of the same batch made for another requester is refused.
        let (batch, evaluated, proof) = answer_for(to2, 4, 2, shares.get(&2).unwrap(), &mut rng);
        let misdirected = p.response(&keys, &clients, 2, batch, evaluated, proof);
        assert_eq!(misdirected.faults.len(), 1);
        let (batch, evaluated, proof) = answer(to2, 2, shares.get(&2).unwrap(), &mut rng);
        let good = p.response(&keys, &clients, 2, batch, evaluated, proof);
        assert!(good.faults.is_empty() && !p.pending());
        // The combined outputs are the plain OPRF under k = 7.
        for (client, y) in good.ready {
            let id = clients[client].id.as_bytes();
            let blind = Blind::random(&mut rng);
            let b = oprf::blind(id, &blind).unwrap();
            let plain = oprf::finalize(id, &blind, &(Scalar::from(7u64) * b));
            assert_eq!(*y, plain);
        }
    }

    #[test]
    fn a_bad_answer_after_the_batch_is_done_still_names_its_evaluator() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let (shares, verifying) = holders();
        let keys = OprfKeys {
            consortium: &[0; 32],
            me: 1,
            share: shares.get(&1),
            verifying: &verifying,
            threshold: 2,
        };
        let clients = clients();
        let mut p = Pseudonyms::new(3);
        let start = p.start(&keys, &clients, &[0, 1], 1, Time(0), &mut rng);
        let ask = |m: MemberIndex| &start.requests.iter().find(|(i, _)| *i == m).unwrap().1;
        let (batch, evaluated, proof) = answer(ask(2), 2, shares.get(&2).unwrap(), &mut rng);
        let good = p.response(&keys, &clients, 2, batch, evaluated, proof);
        assert_eq!(good.ready.len(), 2);
        assert!(!p.pending(), "our share and member 2's complete the batch");
        // Member 3's answer comes late, with member 2's share: named all the same.
        let (batch, evaluated, proof) = answer(ask(3), 3, shares.get(&2).unwrap(), &mut rng);
        let late = p.response(&keys, &clients, 3, batch, evaluated, proof);
        assert_eq!(late.faults.len(), 1);
        assert_eq!(late.faults[0].culprit, crate::step::Culprit::Member(3));
        assert!(late.ready.is_empty() && late.requests.is_empty());
        // Its late answers are checked once: another changes nothing.
        let (batch, evaluated, proof) = answer(ask(3), 3, shares.get(&2).unwrap(), &mut rng);
        let again = p.response(&keys, &clients, 3, batch, evaluated, proof);
        assert!(again.faults.is_empty() && again.ready.is_empty());
    }

    #[test]
    fn a_member_without_a_share_still_gets_pseudonyms_from_t_others() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let (shares, mut verifying) = holders();
        verifying.remove(&1);
        let keys = OprfKeys {
            consortium: &[0; 32],
            me: 1,
            share: None,
            verifying: &verifying,
            threshold: 2,
        };
        let clients = clients();
        let mut p = Pseudonyms::new(3);
        let start = p.start(&keys, &clients, &[1], 1, Time(0), &mut rng);
        let mut ready = Vec::new();
        for (m, r) in &start.requests {
            let (batch, evaluated, proof) = answer(r, *m, shares.get(m).unwrap(), &mut rng);
            ready.extend(
                p.response(&keys, &clients, *m, batch, evaluated, proof)
                    .ready,
            );
        }
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, 1);
    }

    #[test]
    fn requests_are_padded_to_the_bucket_and_padding_yields_no_pseudonym() {
        let (shares, verifying) = holders();
        let keys = OprfKeys {
            consortium: &[0; 32],
            me: 1,
            share: shares.get(&1),
            verifying: &verifying,
            threshold: 2,
        };
        let clients = clients();
        let mut sizes = Vec::new();
        for missing in [vec![0], vec![0, 1]] {
            let mut rng = ChaCha20Rng::from_seed([6; 32]);
            let mut p = Pseudonyms::new(3);
            let start = p.start(&keys, &clients, &missing, 16, Time(0), &mut rng);
            let mut ready = Vec::new();
            for (m, r) in &start.requests {
                let Request::OprfEvaluate { blinded, .. } = r else {
                    panic!()
                };
                sizes.push(blinded.len());
                let (batch, evaluated, proof) = answer(r, *m, shares.get(m).unwrap(), &mut rng);
                ready.extend(
                    p.response(&keys, &clients, *m, batch, evaluated, proof)
                        .ready,
                );
            }
            let got: Vec<usize> = ready.iter().map(|(c, _)| *c).collect();
            assert_eq!(got, missing, "outputs for the real clients only");
        }
        assert!(sizes.iter().all(|&n| n == 16), "{sizes:?}");
    }
}
