//! Fault evidence (DESIGN 5; issue 6): what a fault record carries is the culprit's own signed
//! bytes, so anyone holding the genesis checks it, with the log for what the bytes refer to.
//! [`judge`] is the one judgement, for members and auditors alike: it takes the epoch's keys
//! and final set where the evidence needs them.

use curve25519_dalek::ristretto::RistrettoPoint;

use crate::crypto::oprf::{self, BatchContext};
use crate::epoch::decrypt;
use crate::epoch::submit::verify_submission;
use crate::epoch::values::FinalSet;
use crate::genesis::Consortium;
use crate::gossip::{check_stamp, Stamp};
use crate::record::{
    epoch_of, Body, Evidence, Hash, Payload, ShareEntry, SignedEvaluation, Submission,
    UncheckedRecord,
};
use crate::setup::SetupKeys;
use crate::MemberIndex;

/// A signed decryption shares record offered as evidence, decoded and its signature checked.
pub struct SignedShares {
    pub author: MemberIndex,
    pub hash: Hash,
    pub epoch: u64,
    pub root: Hash,
    pub shares: Vec<ShareEntry>,
}

/// Decodes bytes a fault record carries and checks their signature: they must be an
/// identified record of this consortium.
fn signed(c: &Consortium, bytes: &[u8]) -> Result<UncheckedRecord, String> {
    let record = UncheckedRecord::decode(bytes).map_err(|e| format!("evidence: {e}"))?;
    record
        .check_envelope(c)
        .map_err(|e| format!("evidence: {e}"))?;
    if record.claimed_author().is_none() {
        return Err("evidence: not an identified record".into());
    }
    Ok(record)
}

/// Two different records signed by one author at one sequence number: returns the author.
pub fn check_equivocation(
    c: &Consortium,
    epoch: u64,
    first: &[u8],
    second: &[u8],
) -> Result<MemberIndex, String> {
    let (a, b) = (signed(c, first)?, signed(c, second)?);
    let (Some((author, seq)), Some(other)) = (a.claimed_position(), b.claimed_position()) else {
        return Err("evidence: not identified records".into());
    };
    if other != (author, seq) {
        return Err("the two records are not at one author's one sequence number".into());
    }
    if a.hash() == b.hash() {
        return Err("the two records are the same".into());
    }
    if epoch_of(&a.envelope().payload) != Some(epoch) {
        return Err(format!("the first record is not of epoch {epoch}"));
    }
    Ok(author)
}

/// A decryption shares record as evidence: signed, of `epoch`. Whether its shares fail is
/// judged against the final set by the caller.
pub fn signed_shares(c: &Consortium, epoch: u64, record: &[u8]) -> Result<SignedShares, String> {
    let r = signed(c, record)?;
    let Payload::Identified(i) = &r.envelope().payload else {
        return Err("evidence: not an identified record".into());
    };
    match &i.body {
        Body::DecryptionShares {
            epoch: e,
            root,
            shares,
        } if *e == epoch => Ok(SignedShares {
            author: i.author,
            hash: r.hash(),
            epoch,
            root: *root,
            shares: shares.clone(),
        }),
        _ => Err(format!(
            "evidence: not a decryption shares record of epoch {epoch}"
        )),
    }
}

/// The member the evidence names, as claimed (before any check).
pub fn claimed_culprit(evidence: &Evidence) -> Option<MemberIndex> {
    let bytes = match evidence {
        Evidence::Equivocation { first, .. } => first,
        Evidence::BadDecryptionShares { record } => record,
        Evidence::BadOprfEvaluation(e) => return Some(e.evaluator),
        Evidence::InvalidPublication { exit, .. } => return Some(*exit),
    };
    UncheckedRecord::decode(bytes).ok()?.claimed_author()
}

/// The epoch the evidence belongs to, as claimed.
pub fn claimed_epoch(evidence: &Evidence) -> Option<u64> {
    let bytes = match evidence {
        Evidence::Equivocation { first, .. } => first,
        Evidence::BadDecryptionShares { record } => record,
        Evidence::BadOprfEvaluation(e) => return Some(e.epoch),
        Evidence::InvalidPublication { record, .. } => record,
    };
    epoch_of(&UncheckedRecord::decode(bytes).ok()?.envelope().payload)
}

/// An exit's stamped publication as evidence: the stamp is the exit's, and the record a
/// submission of `epoch`. Whether it is invalid is judged with the epoch's keys by the caller.
pub fn stamped_submission(
    c: &Consortium,
    epoch: u64,
    record: &[u8],
    exit: MemberIndex,
    signature: &ed25519_dalek::Signature,
) -> Result<Submission, String> {
    let stamp = Stamp {
        exit,
        signature: *signature,
    };
    check_stamp(c, &crate::record::hash_bytes(record), &stamp).map_err(|e| e.to_string())?;
    let u = UncheckedRecord::decode(record).map_err(|e| format!("evidence: {e}"))?;
    if u.envelope().consortium != c.id {
        return Err("evidence: a record of another consortium".into());
    }
    match &u.envelope().payload {
        Payload::Submission(s) if s.epoch == epoch => Ok(Submission::clone(s)),
        _ => Err(format!("evidence: not a submission of epoch {epoch}")),
    }
}

/// A signed OPRF evaluation as evidence: signed by its evaluator, of `epoch`, and its proof
/// fails against the evaluator's verifying share `pk`. Returns the evaluator.
pub fn check_bad_evaluation(
    c: &Consortium,
    epoch: u64,
    e: &SignedEvaluation,
    pk: &RistrettoPoint,
) -> Result<MemberIndex, String> {
    if e.epoch != epoch {
        return Err(format!("evidence: an evaluation of epoch {}", e.epoch));
    }
    e.check_signature(c)?;
    let ctx = BatchContext {
        consortium: &c.id,
        epoch,
        requester: e.requester,
        evaluator: e.evaluator,
    };
    match oprf::verify_partial(pk, &e.blinded, &e.evaluated, &e.proof, &ctx) {
        Ok(()) => Err("the evaluation's proof verifies".into()),
        Err(_) => Ok(e.evaluator),
    }
}

/// What evidence in a fault record shows.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// It holds: the member is at fault.
    Proven(MemberIndex),
    /// It does not hold: the accuser is at fault.
    False(String),
    /// It needs the epoch's keys.
    NeedsKeys,
    /// It needs the epoch's final set; its signed shares are `author`'s.
    NeedsFinalSet(MemberIndex),
}

/// Judges `evidence` of `epoch` with the epoch's decided keys and final set, if known.
pub fn judge(
    c: &Consortium,
    epoch: u64,
    evidence: &Evidence,
    keys: Option<&SetupKeys>,
    set: Option<&FinalSet>,
) -> Judgement {
    let verdict = |r: Result<MemberIndex, String>| match r {
        Ok(m) => Judgement::Proven(m),
        Err(why) => Judgement::False(why),
    };
    match evidence {
        Evidence::Equivocation { first, second } => {
            verdict(check_equivocation(c, epoch, first, second))
        }
        Evidence::InvalidPublication {
            record,
            exit,
            signature,
        } => {
            let s = match stamped_submission(c, epoch, record, *exit, signature) {
                Ok(s) => s,
                Err(why) => return Judgement::False(why),
            };
            let Some(keys) = keys else {
                return Judgement::NeedsKeys;
            };
            match verify_submission(c, keys, &s) {
                Err(_) => Judgement::Proven(*exit),
                Ok(_) => Judgement::False("the submission is valid".into()),
            }
        }
        Evidence::BadOprfEvaluation(e) => {
            let Some(keys) = keys else {
                return Judgement::NeedsKeys;
            };
            let Some(pk) = keys.k.verifying.get(&e.evaluator) else {
                return Judgement::False(format!(
                    "member {} holds no pseudonym key share of epoch {epoch}",
                    e.evaluator
                ));
            };
            verdict(check_bad_evaluation(c, epoch, e, pk))
        }
        Evidence::BadDecryptionShares { record } => {
            let s = match signed_shares(c, epoch, record) {
                Ok(s) => s,
                Err(why) => return Judgement::False(why),
            };
            let (Some(keys), Some(set)) = (keys, set) else {
                return Judgement::NeedsFinalSet(s.author);
            };
            let Some(verifying) = keys.x.verifying.get(&s.author) else {
                return Judgement::Proven(s.author);
            };
            match decrypt::check_record(
                c,
                epoch,
                set,
                s.author,
                verifying,
                &s.root,
                &s.shares,
                |_| false,
            ) {
                Err(_) => Judgement::Proven(s.author),
                Ok(_) => Judgement::False("its decryption shares are valid".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::genesis::test_consortium_with_secrets;
    use crate::record::{Record, Run};

    fn body(epoch: u64, package: u8) -> Body {
        Body::DkgRound2 {
            epoch,
            run: Run::Decryption,
            attempt: 0,
            ephemeral: [package; 32],
            ephemeral_proof: crate::crypto::schnorr::Signature {
                r: Default::default(),
                s: Default::default(),
            },
            shares: Vec::new(),
        }
    }

    #[test]
    fn equivocation_needs_two_signed_records_at_one_position() {
        let (c, keys) = test_consortium_with_secrets(4);
        let sign = |m: usize, seq, b| {
            Record::identified(&c.id, keys[m - 1].identity(), m as u16, seq, [0; 32], b)
                .bytes()
                .to_vec()
        };
        let a = sign(2, 3, body(1, 1));
        let b = sign(2, 3, body(1, 2));
        assert_eq!(check_equivocation(&c, 1, &a, &b), Ok(2));
        assert!(
            check_equivocation(&c, 1, &a, &a).is_err(),
            "the same record"
        );
        assert!(check_equivocation(&c, 2, &a, &b).is_err(), "another epoch");
        let other_seq = sign(2, 4, body(1, 2));
        assert!(check_equivocation(&c, 1, &a, &other_seq).is_err());
        let other_author = sign(3, 3, body(1, 2));
        assert!(check_equivocation(&c, 1, &a, &other_author).is_err());
        // A record member 2 never signed: member 3's key over member 2's position.
        let forged = Record::identified(&c.id, keys[2].identity(), 2, 3, [0; 32], body(1, 2))
            .bytes()
            .to_vec();
        assert!(check_equivocation(&c, 1, &a, &forged).is_err(), "forged");
        let mut flipped = b.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(check_equivocation(&c, 1, &a, &flipped).is_err(), "tampered");
        assert!(check_equivocation(&c, 1, &a, &[]).is_err(), "empty");
    }

    #[test]
    fn a_bad_oprf_evaluation_is_proven_only_when_signed_and_failing() {
        use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
        use curve25519_dalek::scalar::Scalar;
        use ed25519_dalek::Signer;
        use rand_core::SeedableRng;
        let (c, keys) = test_consortium_with_secrets(4);
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([4; 32]);
        let share = Scalar::from(11u64);
        let pk = share * G;
        let blinded = vec![Scalar::from(3u64) * G, Scalar::from(5u64) * G];
        let ctx = BatchContext {
            consortium: &c.id,
            epoch: 2,
            requester: 1,
            evaluator: 3,
        };
        let (good, proof) = oprf::evaluate_partial(&share, &blinded, &ctx, &mut rng).unwrap();
        let signed = |evaluated: Vec<RistrettoPoint>, signer: usize| {
            let bytes =
                SignedEvaluation::signed_bytes(&c.id, 2, 1, 3, 9, &blinded, &evaluated, &proof);
            SignedEvaluation {
                epoch: 2,
                requester: 1,
                evaluator: 3,
                batch: 9,
                blinded: blinded.clone(),
                evaluated,
                proof,
                signature: keys[signer].identity().sign(&bytes),
            }
        };
        let honest = signed(good.clone(), 2);
        assert!(
            check_bad_evaluation(&c, 2, &honest, &pk).is_err(),
            "a good one"
        );
        let mut moved = good.clone();
        moved[0] += G;
        assert_eq!(
            check_bad_evaluation(&c, 2, &signed(moved.clone(), 2), &pk),
            Ok(3)
        );
        assert!(
            check_bad_evaluation(&c, 2, &signed(moved.clone(), 1), &pk).is_err(),
            "signed by another member"
        );
        assert!(
            check_bad_evaluation(&c, 3, &signed(moved.clone(), 2), &pk).is_err(),
            "another epoch"
        );
        let mut resigned_elsewhere = signed(moved, 2);
        resigned_elsewhere.batch = 10;
        assert!(
            check_bad_evaluation(&c, 2, &resigned_elsewhere, &pk).is_err(),
            "a field the signature covers changed"
        );
    }
}
