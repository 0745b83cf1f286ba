//! What a member puts on gossip (DESIGN 6, issue 6): a record's canonical bytes, and for a
//! submission, which has no author, the signature of the exit that published it. An exit
//! verifies a submission before it publishes it; if one publishes an invalid submission anyway,
//! the record and its stamp are the exit's own signed evidence, and go on the log. A submission
//! on gossip without its publisher's stamp is refused and the publisher named.
//!
//! Layout: `record ‖ exit (u16, big-endian) ‖ ed25519 signature (64)`. A record's encoding is
//! canonical and exact, so the stamp never makes a framed submission decode as something else.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};

use crate::genesis::{Consortium, ConsortiumId};
use crate::record::{Hash, Payload, Record, UncheckedRecord};
use crate::MemberIndex;

/// Bytes a stamp adds.
pub const STAMP_LEN: usize = 2 + 64;

/// The bytes an exit signs for a submission it publishes.
pub fn stamp_bytes(consortium: &ConsortiumId, record: &Hash) -> Vec<u8> {
    [&b"bankmesh.exit-stamp.v1"[..], consortium, record].concat()
}

/// A record as it goes on gossip from `me`.
pub fn frame(
    consortium: &ConsortiumId,
    me: MemberIndex,
    key: &SigningKey,
    record: &Record,
) -> Vec<u8> {
    let mut out = record.bytes().to_vec();
    if matches!(record.payload(), Payload::Submission(_)) {
        out.extend_from_slice(&me.to_be_bytes());
        out.extend_from_slice(
            &key.sign(&stamp_bytes(consortium, &record.hash()))
                .to_bytes(),
        );
    }
    out
}

/// The stamp of the exit that published a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub exit: MemberIndex,
    pub signature: Signature,
}

/// Why gossip from a peer is refused before its record is looked at.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a submission on gossip without its publisher's stamp")]
    Unstamped,
    #[error("a submission stamped by member {0}, not by the member that published it")]
    OtherExit(MemberIndex),
    #[error("the stamp's signature does not verify")]
    BadStamp,
}

/// Gossip from `from` that is no record by itself, read as a stamped submission: the record
/// decoded and its stamp checked. `None` if it is not a record and a stamp either.
pub fn split_stamped(
    c: &Consortium,
    from: MemberIndex,
    data: &[u8],
) -> Option<Result<(UncheckedRecord, Stamp), FrameError>> {
    let (record, stamp) = data.split_at_checked(data.len().checked_sub(STAMP_LEN)?)?;
    let u = UncheckedRecord::decode(record).ok()?;
    if !matches!(u.envelope().payload, Payload::Submission(_)) {
        return None;
    }
    let (exit, signature) = stamp.split_at(2);
    let checked = (|| {
        let exit = u16::from_be_bytes(exit.try_into().map_err(|_| FrameError::BadStamp)?);
        let signature = Signature::from_slice(signature).map_err(|_| FrameError::BadStamp)?;
        if exit != from {
            return Err(FrameError::OtherExit(exit));
        }
        let stamp = Stamp { exit, signature };
        check_stamp(c, &u.hash(), &stamp)?;
        Ok(stamp)
    })();
    Some(checked.map(|stamp| (u, stamp)))
}

/// The record's bytes in gossip, stamp or not (unchecked: for labels and logs).
pub fn record_part(data: &[u8]) -> &[u8] {
    if UncheckedRecord::decode(data).is_ok() {
        return data;
    }
    match data
        .len()
        .checked_sub(STAMP_LEN)
        .and_then(|split| data.get(..split))
    {
        Some(record) if UncheckedRecord::decode(record).is_ok() => record,
        _ => data,
    }
}

/// Whether `stamp` is its exit's signature on the record `hash`.
pub fn check_stamp(c: &Consortium, hash: &Hash, stamp: &Stamp) -> Result<(), FrameError> {
    let key = c.identity(stamp.exit).ok_or(FrameError::BadStamp)?;
    key.verify(&stamp_bytes(&c.id, hash), &stamp.signature)
        .map_err(|_| FrameError::BadStamp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::genesis::test_consortium_with_secrets;
    use crate::record::{Body, Submission};

    fn submission(c: &Consortium) -> Record {
        // A well-formed submission; split_stamped does not verify its proofs or signatures.
        use crate::crypto::{ring::RingSignature, schnorr, validity};
        use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
        use curve25519_dalek::scalar::Scalar;
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let x = RistrettoPoint::mul_base(&Scalar::from(5u64));
        let mut t = merlin::Transcript::new(b"test");
        let (ciphertext, proof) = validity::encrypt_with_proof(&mut t, &x, 7, &mut rng).unwrap();
        let s = Submission {
            epoch: 1,
            tag: x,
            ciphertext,
            one_time: x,
            validity: proof,
            holder: schnorr::Signature {
                r: CompressedRistretto::default(),
                s: Scalar::ZERO,
            },
            ring: RingSignature {
                slot: 0,
                link: CompressedRistretto::default(),
                slot_tag: CompressedRistretto::default(),
                c0: Scalar::ZERO,
                responses: Vec::new(),
            },
        };
        Record::submission(&c.id, s)
    }

    #[test]
    fn a_submission_goes_out_stamped_and_only_its_publisher_may_stamp_it() {
        let (c, keys) = test_consortium_with_secrets(3);
        let s = submission(&c);
        let framed = frame(&c.id, 2, keys[1].identity(), &s);
        assert_eq!(framed.len(), s.bytes().len() + STAMP_LEN);
        let (record, stamp) = split_stamped(&c, 2, &framed).unwrap().unwrap();
        assert_eq!((record.bytes(), stamp.exit), (s.bytes(), 2));
        assert_eq!(
            split_stamped(&c, 3, &framed).unwrap().err(),
            Some(FrameError::OtherExit(2))
        );
        assert!(
            split_stamped(&c, 2, s.bytes()).is_none(),
            "bare: not a stamped frame"
        );
        let forged = frame(&c.id, 2, keys[2].identity(), &s);
        assert_eq!(
            split_stamped(&c, 2, &forged).unwrap().err(),
            Some(FrameError::BadStamp)
        );
        let mut flipped = framed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(split_stamped(&c, 2, &flipped).unwrap().is_err());
        // Identified records go as they are; bytes that are no record are no frame.
        let r = Record::identified(
            &c.id,
            keys[0].identity(),
            1,
            1,
            [0; 32],
            Body::OprfUsage {
                epoch: 1,
                served: vec![],
            },
        );
        assert_eq!(frame(&c.id, 1, keys[0].identity(), &r), r.bytes());
        assert!(split_stamped(&c, 1, r.bytes()).is_none());
        assert!(split_stamped(&c, 1, b"junk").is_none());
        assert_eq!(record_part(&framed), s.bytes());
    }
}
