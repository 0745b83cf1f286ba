//! Key layout and fixed-size value encodings of the single `log` tree.
//!
//! Every log keyspace lives in one sled tree so that one `Batch` updates all
//! of them atomically. Keys start with a one-byte prefix:
//!
//! | key                                   | value                          |
//! |---------------------------------------|--------------------------------|
//! | `r` ‖ hash (32)                       | record bytes                   |
//! | `a` ‖ position (be u64)               | hash (32)                      |
//! | `m` ‖ hash (32)                       | [`Meta`] (59 bytes)            |
//! | `h` ‖ author (be u16)                 | seq (be u64) ‖ hash (32)       |
//! | `c` ‖ author (be u16) ‖ seq (be u64)  | hash (32)                      |
//! | `e` ‖ epoch (be u64) ‖ hash (32)      | empty                          |
//! | `x` ‖ hash (32)                       | evidence bytes (equivocations) |
//! | `y` ‖ author ‖ seq ‖ hash             | empty (evidence kept per position) |
//! | `z` ‖ author (be u16)                 | evidence kept: records ‖ bytes (be u64 each) |
//! | `n`                                   | log length (be u64)            |
//! | `V`                                   | format tag [`FORMAT`]          |

use crate::{AuthorPos, Hash};

pub(crate) const FORMAT: &[u8] = b"bankmesh-store/1";

pub(crate) const P_RECORD: u8 = b'r';
pub(crate) const P_ARRIVAL: u8 = b'a';
pub(crate) const P_META: u8 = b'm';
pub(crate) const P_HEAD: u8 = b'h';
pub(crate) const P_CHAIN: u8 = b'c';
pub(crate) const P_EPOCH: u8 = b'e';
pub(crate) const P_EVIDENCE: u8 = b'x';
pub(crate) const P_EVIDENCE_AT: u8 = b'y';
pub(crate) const P_EVIDENCE_USED: u8 = b'z';
pub(crate) const K_LEN: &[u8] = b"n";
pub(crate) const K_FORMAT: &[u8] = b"V";

fn with_prefix(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn record(hash: &Hash) -> Vec<u8> {
    with_prefix(P_RECORD, &[hash])
}
pub(crate) fn arrival(pos: u64) -> Vec<u8> {
    with_prefix(P_ARRIVAL, &[&pos.to_be_bytes()])
}
pub(crate) fn meta(hash: &Hash) -> Vec<u8> {
    with_prefix(P_META, &[hash])
}
pub(crate) fn head(author: u16) -> Vec<u8> {
    with_prefix(P_HEAD, &[&author.to_be_bytes()])
}
pub(crate) fn chain(author: u16, seq: u64) -> Vec<u8> {
    with_prefix(P_CHAIN, &[&author.to_be_bytes(), &seq.to_be_bytes()])
}
pub(crate) fn chain_prefix(author: u16) -> Vec<u8> {
    with_prefix(P_CHAIN, &[&author.to_be_bytes()])
}
pub(crate) fn epoch(epoch: u64, hash: &Hash) -> Vec<u8> {
    with_prefix(P_EPOCH, &[&epoch.to_be_bytes(), hash])
}
pub(crate) fn epoch_prefix(epoch: u64) -> Vec<u8> {
    with_prefix(P_EPOCH, &[&epoch.to_be_bytes()])
}
pub(crate) fn evidence(hash: &Hash) -> Vec<u8> {
    with_prefix(P_EVIDENCE, &[hash])
}
pub(crate) fn evidence_at(author: u16, seq: u64, hash: &Hash) -> Vec<u8> {
    with_prefix(
        P_EVIDENCE_AT,
        &[&author.to_be_bytes(), &seq.to_be_bytes(), hash],
    )
}
pub(crate) fn evidence_used(author: u16) -> Vec<u8> {
    with_prefix(P_EVIDENCE_USED, &[&author.to_be_bytes()])
}
/// Records and bytes of evidence kept for an author.
pub(crate) fn encode_used(records: u64, bytes: u64) -> Vec<u8> {
    [records.to_be_bytes(), bytes.to_be_bytes()].concat()
}
pub(crate) fn decode_used(v: &[u8]) -> Option<(u64, u64)> {
    Some((be_u64(v.get(0..8)?)?, be_u64(v.get(8..16)?)?))
}
pub(crate) fn evidence_author_prefix(author: u16) -> Vec<u8> {
    with_prefix(P_EVIDENCE_AT, &[&author.to_be_bytes()])
}
pub(crate) fn evidence_at_prefix(author: u16, seq: u64) -> Vec<u8> {
    with_prefix(P_EVIDENCE_AT, &[&author.to_be_bytes(), &seq.to_be_bytes()])
}

/// Decodes a big-endian u64 from exactly 8 bytes.
pub(crate) fn be_u64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}
/// Decodes a big-endian u16 from exactly 2 bytes.
pub(crate) fn be_u16(b: &[u8]) -> Option<u16> {
    <[u8; 2]>::try_from(b).ok().map(u16::from_be_bytes)
}
/// Decodes a hash from exactly 32 bytes.
pub(crate) fn hash(b: &[u8]) -> Option<Hash> {
    <[u8; 32]>::try_from(b).ok()
}

/// Per-record metadata stored under `m` ‖ hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub position: u64,
    pub author: Option<AuthorPos>,
    pub epoch: Option<u64>,
}

const FLAG_AUTHOR: u8 = 1;
const FLAG_EPOCH: u8 = 2;
pub(crate) const META_LEN: usize = 8 + 1 + 2 + 8 + 32 + 8;

impl Meta {
    /// Fixed 59-byte encoding: position ‖ flags ‖ author ‖ seq ‖ prev ‖ epoch.
    /// Absent fields are zero.
    pub(crate) fn encode(&self) -> [u8; META_LEN] {
        let mut out = [0u8; META_LEN];
        let mut flags = 0u8;
        let (author, seq, prev) = match self.author {
            Some(a) => {
                flags |= FLAG_AUTHOR;
                (a.author, a.seq, a.prev)
            }
            None => (0, 0, [0u8; 32]),
        };
        let epoch = match self.epoch {
            Some(e) => {
                flags |= FLAG_EPOCH;
                e
            }
            None => 0,
        };
        let parts: [&[u8]; 6] = [
            &self.position.to_be_bytes(),
            &[flags],
            &author.to_be_bytes(),
            &seq.to_be_bytes(),
            &prev,
            &epoch.to_be_bytes(),
        ];
        let mut at = 0;
        for p in parts {
            if let Some(dst) = out.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        out
    }

    /// Strict decoding: exact length, known flags, absent fields all-zero.
    pub(crate) fn decode(b: &[u8]) -> Option<Meta> {
        if b.len() != META_LEN {
            return None;
        }
        let position = be_u64(b.get(0..8)?)?;
        let flags = *b.get(8)?;
        let author = be_u16(b.get(9..11)?)?;
        let seq = be_u64(b.get(11..19)?)?;
        let prev = hash(b.get(19..51)?)?;
        let epoch = be_u64(b.get(51..59)?)?;
        if flags & !(FLAG_AUTHOR | FLAG_EPOCH) != 0 {
            return None;
        }
        let author = if flags & FLAG_AUTHOR != 0 {
            Some(AuthorPos { author, seq, prev })
        } else {
            if author != 0 || seq != 0 || prev != [0u8; 32] {
                return None;
            }
            None
        };
        let epoch = if flags & FLAG_EPOCH != 0 {
            Some(epoch)
        } else {
            if epoch != 0 {
                return None;
            }
            None
        };
        Some(Meta {
            position,
            author,
            epoch,
        })
    }
}

/// Head value: seq ‖ hash.
pub(crate) fn encode_head(seq: u64, hash: &Hash) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(hash);
    v
}

pub(crate) fn decode_head(b: &[u8]) -> Option<(u64, Hash)> {
    if b.len() != 40 {
        return None;
    }
    Some((be_u64(b.get(0..8)?)?, hash(b.get(8..40)?)?))
}

/// Decodes one entry of the log tree by its key's prefix, as opening a store reads it: `Err`
/// names what does not decode. Never panics, whatever the bytes (the fuzz targets drive it).
pub fn check_entry(key: &[u8], value: &[u8]) -> Result<(), String> {
    let (&prefix, rest) = key.split_first().ok_or("empty key")?;
    let fixed = |len: usize| {
        (rest.len() == len).then_some(()).ok_or(format!(
            "key of prefix {:?} has length {}",
            prefix as char,
            key.len()
        ))
    };
    let bad = |what: &str| Err(format!("{what} value malformed"));
    match prefix {
        P_RECORD => {
            fixed(32)?;
            if crate::record_hash(value).as_slice() != rest {
                return Err("record bytes do not hash to their key".into());
            }
            bankmesh_protocol::UncheckedRecord::decode(value)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        P_ARRIVAL => {
            fixed(8)?;
            hash(value).map(|_| ()).map_or_else(|| bad("arrival"), Ok)
        }
        P_META => {
            fixed(32)?;
            Meta::decode(value).map_or_else(|| bad("meta"), |_| Ok(()))
        }
        P_HEAD => {
            fixed(2)?;
            decode_head(value).map_or_else(|| bad("head"), |_| Ok(()))
        }
        P_CHAIN => {
            fixed(10)?;
            hash(value).map_or_else(|| bad("chain"), |_| Ok(()))
        }
        P_EPOCH | P_EVIDENCE_AT => value
            .is_empty()
            .then_some(())
            .ok_or("index value not empty".into()),
        P_EVIDENCE => bankmesh_protocol::UncheckedRecord::decode(value)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        P_EVIDENCE_USED => {
            fixed(2)?;
            decode_used(value).map_or_else(|| bad("evidence counter"), |_| Ok(()))
        }
        _ if key == K_LEN => be_u64(value).map_or_else(|| bad("length"), |_| Ok(())),
        _ if key == K_FORMAT => (value == FORMAT)
            .then_some(())
            .ok_or("unknown store format".into()),
        _ => Err(format!("unknown key prefix {prefix:#04x}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn meta_roundtrip_and_strictness() {
        let cases = [
            Meta {
                position: 7,
                author: None,
                epoch: None,
            },
            Meta {
                position: u64::MAX,
                author: Some(AuthorPos {
                    author: 65535,
                    seq: 3,
                    prev: [9; 32],
                }),
                epoch: Some(0),
            },
            Meta {
                position: 0,
                author: None,
                epoch: Some(42),
            },
        ];
        for m in cases {
            let enc = m.encode();
            assert_eq!(Meta::decode(&enc), Some(m));
            assert_eq!(Meta::decode(&enc[..58]), None);
        }
        let mut bad = cases[0].encode();
        bad[8] = 4; // unknown flag
        assert_eq!(Meta::decode(&bad), None);
        let mut bad = cases[0].encode();
        bad[12] = 1; // seq set without author flag
        assert_eq!(Meta::decode(&bad), None);
        let mut bad = cases[0].encode();
        bad[58] = 1; // epoch set without epoch flag
        assert_eq!(Meta::decode(&bad), None);
    }

    #[test]
    fn head_roundtrip() {
        let v = encode_head(5, &[3; 32]);
        assert_eq!(decode_head(&v), Some((5, [3; 32])));
        assert_eq!(decode_head(&v[1..]), None);
    }

    #[test]
    fn keys_sort_numerically() {
        assert!(arrival(1) < arrival(256));
        assert!(chain(1, 2) < chain(1, 300));
        assert!(chain(1, u64::MAX) < chain(2, 0));
        assert!(epoch(1, &[0xff; 32]) < epoch(2, &[0; 32]));
    }
}
