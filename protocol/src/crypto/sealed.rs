//! Encryption of DKG round-2 shares to each recipient's x25519 key (DESIGN 3): an ephemeral
//! x25519 key per record, HKDF-SHA256 to a per-recipient key, ChaCha20-Poly1305 with the
//! context as associated data.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::error::CryptoError;

/// Everything a sealed share is bound to: consortium, epoch, run, attempt, sender and
/// recipient.
pub struct ShareContext<'a> {
    pub consortium: &'a [u8; 32],
    pub epoch: u64,
    pub run: &'a [u8],
    pub attempt: u32,
    pub sender: u16,
    pub recipient: u16,
}

impl ShareContext<'_> {
    fn info(&self, ephemeral: &[u8; 32], recipient_key: &[u8; 32]) -> Vec<u8> {
        let mut info = b"bankmesh.dkg-share.v2".to_vec();
        info.extend_from_slice(self.consortium);
        info.extend_from_slice(&self.epoch.to_be_bytes());
        info.extend_from_slice(&(self.run.len() as u64).to_be_bytes());
        info.extend_from_slice(self.run);
        info.extend_from_slice(&self.attempt.to_be_bytes());
        info.extend_from_slice(&self.sender.to_be_bytes());
        info.extend_from_slice(&self.recipient.to_be_bytes());
        info.extend_from_slice(ephemeral);
        info.extend_from_slice(recipient_key);
        info
    }
}

fn cipher(shared: &[u8; 32], info: &[u8]) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(None, shared);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is a valid HKDF-SHA256 output length.
    let _ = hk.expand(info, key.as_mut());
    ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
}

/// Encrypts `plaintext` for `recipient`. The key is unique per (ephemeral, recipient), so a
/// zero nonce is safe.
pub fn seal(
    ctx: &ShareContext<'_>,
    ephemeral: &StaticSecret,
    recipient: &PublicKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let eph_pub = PublicKey::from(ephemeral).to_bytes();
    let shared = Zeroizing::new(ephemeral.diffie_hellman(recipient).to_bytes());
    let info = ctx.info(&eph_pub, recipient.as_bytes());
    cipher(&shared, &info)
        .encrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: plaintext,
                aad: &info,
            },
        )
        .map_err(|_| CryptoError::BadInput)
}

/// Decrypts a share sealed to us; fails if anything in the context or ciphertext was changed.
pub fn open(
    ctx: &ShareContext<'_>,
    ephemeral: &[u8; 32],
    recipient: &StaticSecret,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let shared = Zeroizing::new(
        recipient
            .diffie_hellman(&PublicKey::from(*ephemeral))
            .to_bytes(),
    );
    let info = ctx.info(ephemeral, PublicKey::from(recipient).as_bytes());
    cipher(&shared, &info)
        .decrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: ciphertext,
                aad: &info,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Proof("sealed DKG share"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn ctx(recipient: u16) -> ShareContext<'static> {
        ShareContext {
            consortium: &[9; 32],
            epoch: 4,
            run: b"x",
            attempt: 0,
            sender: 1,
            recipient,
        }
    }

    #[test]
    fn opens_only_for_the_recipient_and_context() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([3; 32]);
        let eph = StaticSecret::random_from_rng(&mut rng);
        let bob = StaticSecret::random_from_rng(&mut rng);
        let eve = StaticSecret::random_from_rng(&mut rng);
        let sealed = seal(&ctx(2), &eph, &PublicKey::from(&bob), b"share").unwrap();
        let eph_pub = PublicKey::from(&eph).to_bytes();
        assert_eq!(
            open(&ctx(2), &eph_pub, &bob, &sealed).unwrap().as_slice(),
            b"share"
        );
        assert!(open(&ctx(2), &eph_pub, &eve, &sealed).is_err());
        assert!(open(&ctx(3), &eph_pub, &bob, &sealed).is_err());
        let other_epoch = ShareContext { epoch: 5, ..ctx(2) };
        assert!(open(&other_epoch, &eph_pub, &bob, &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(open(&ctx(2), &eph_pub, &bob, &tampered).is_err());
    }
}
