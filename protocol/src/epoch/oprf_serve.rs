//! OPRF serving (DESIGN 4.2): batched evaluations with proofs for other members, within a
//! per-requester quota per epoch. The counts are stored before each answer goes out, so a
//! restart never serves a requester past its quota, and they go on the log when the epoch's
//! submissions close.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};

use crate::crypto::oprf::{self, BatchContext};
use sha2::{Digest, Sha256};

use crate::local::{self, LocalWrite, Served};
use crate::messages::{Response, OPRF_BATCH_MAX};
use crate::record::{Body, SignedEvaluation};
use ed25519_dalek::{Signer, SigningKey};

#[derive(Default)]
pub struct OprfServer {
    served: Served,
}

/// SHA-256 over a batch's blinded elements.
fn batch_digest(blinded: &[RistrettoPoint]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in blinded {
        h.update(p.compress().as_bytes());
    }
    h.finalize().into()
}

fn refused(reason: impl Into<String>) -> Response {
    Response::Refused {
        reason: reason.into(),
    }
}

impl OprfServer {
    /// Counts read back after a restart.
    pub fn restore(served: Served) -> OprfServer {
        OprfServer { served }
    }

    /// Evaluates a batch for `from` with our share if its quota allows; the count to store
    /// comes with the answer.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &mut self,
        ctx: &BatchContext<'_>,
        batch: u32,
        blinded: &[RistrettoPoint],
        share: &Scalar,
        quota: u32,
        identity: &SigningKey,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (Response, Option<LocalWrite>) {
        let (epoch, from) = (ctx.epoch, ctx.requester);
        if blinded.is_empty() || blinded.len() > OPRF_BATCH_MAX {
            let reason = format!("batch must hold 1..={OPRF_BATCH_MAX} elements");
            return (refused(reason), None);
        }
        let digest = batch_digest(blinded);
        let (used, seen) = self.served.get(&from).cloned().unwrap_or_default();
        // A batch asked again (a lost answer) is answered again, not charged again.
        let again = seen.contains(&digest);
        let asked = u32::try_from(blinded.len()).unwrap_or(u32::MAX);
        if !again && used.saturating_add(asked) > quota {
            let reason = format!("OPRF quota of {quota} per epoch exhausted");
            return (refused(reason), None);
        }
        match oprf::evaluate_partial(share, blinded, ctx, rng) {
            Ok((evaluated, proof)) => {
                // Signed, so that a bad evaluation is evidence against us (and a good one
                // cannot be made to look bad).
                let signature = identity.sign(&SignedEvaluation::signed_bytes(
                    ctx.consortium,
                    epoch,
                    from,
                    ctx.evaluator,
                    batch,
                    blinded,
                    &evaluated,
                    &proof,
                ));
                let response = Response::OprfEvaluated {
                    epoch,
                    batch,
                    evaluated,
                    proof,
                    signature,
                };
                if again {
                    return (response, None);
                }
                let slot = self.served.entry(from).or_default();
                slot.0 = used + asked;
                slot.1.insert(digest);
                (response, Some(local::served(epoch, &self.served)))
            }
            Err(e) => (refused(e.to_string()), None),
        }
    }

    /// The usage record posted when the epoch's submissions close.
    pub fn usage(&self, epoch: u64) -> Body {
        Body::OprfUsage {
            epoch,
            served: self.served.iter().map(|(&m, (n, _))| (m, *n)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Response;
    use crate::MemberIndex;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    impl OprfServer {
        fn evaluate_for_test(
            &mut self,
            ctx: &BatchContext<'_>,
            batch: u32,
            blinded: &[RistrettoPoint],
            share: &Scalar,
            quota: u32,
            rng: &mut ChaCha20Rng,
        ) -> (Response, Option<LocalWrite>) {
            let key = SigningKey::from_bytes(&[3; 32]);
            self.evaluate(ctx, batch, blinded, share, quota, &key, rng)
        }
    }

    fn ctx(epoch: u64, requester: MemberIndex) -> BatchContext<'static> {
        BatchContext {
            consortium: &[0; 32],
            epoch,
            requester,
            evaluator: 1,
        }
    }

    #[test]
    fn the_quota_holds_across_a_restart_and_bad_batches_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([8; 32]);
        let share = Scalar::from(9u64);
        let point = Scalar::from(3u64) * G;
        let mut s = OprfServer::default();
        let (r, w) = s.evaluate_for_test(&ctx(1, 2), 0, &[point; 3], &share, 5, &mut rng);
        assert!(matches!(r, Response::OprfEvaluated { .. }));
        let w = w.expect("the count is stored before the answer");
        // The same batch again (its answer was lost) is answered, not charged.
        let (r, w2) = s.evaluate_for_test(&ctx(1, 2), 0, &[point; 3], &share, 5, &mut rng);
        assert!(matches!(r, Response::OprfEvaluated { .. }) && w2.is_none());
        let other = Scalar::from(4u64) * G;
        let (r, w2) = s.evaluate_for_test(&ctx(1, 2), 1, &[other; 3], &share, 5, &mut rng);
        assert!(
            matches!(r, Response::Refused { .. }) && w2.is_none(),
            "3 + 3 > 5"
        );
        // Restarted from the stored count: still refused.
        let back = crate::local::Restored::parse(&[(w.key, w.value)]).unwrap();
        let served = back.epochs.get(&1).unwrap().served.clone();
        let mut s = OprfServer::restore(served);
        let (r, _) = s.evaluate_for_test(&ctx(1, 2), 1, &[other; 3], &share, 5, &mut rng);
        assert!(matches!(r, Response::Refused { .. }));
        // Another requester has its own quota; empty and oversized batches are refused.
        let (r, _) = s.evaluate_for_test(&ctx(1, 3), 0, &[point; 2], &share, 5, &mut rng);
        assert!(matches!(r, Response::OprfEvaluated { .. }));
        let (r, _) = s.evaluate_for_test(&ctx(1, 3), 0, &[], &share, 5, &mut rng);
        assert!(matches!(r, Response::Refused { .. }));
        let big = vec![point; OPRF_BATCH_MAX + 1];
        let (r, _) = s.evaluate_for_test(&ctx(1, 4), 0, &big, &share, 10_000, &mut rng);
        assert!(matches!(r, Response::Refused { .. }));
        assert_eq!(
            s.usage(1),
            Body::OprfUsage {
                epoch: 1,
                served: vec![(2, 3), (3, 2)]
            }
        );
    }
}
