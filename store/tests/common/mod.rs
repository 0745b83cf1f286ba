#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use bankmesh_store::{AuthorPos, Hash, NewRecord, ZERO_HASH};

/// Bytes of a chained test record (unique per author/seq/payload).
pub fn chained_bytes(author: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = b"chain".to_vec();
    b.extend_from_slice(&author.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

pub fn anon_bytes(payload: &[u8]) -> Vec<u8> {
    let mut b = b"anon".to_vec();
    b.extend_from_slice(payload);
    b
}

pub fn chained(
    bytes: &[u8],
    author: u16,
    seq: u64,
    prev: Hash,
    epoch: Option<u64>,
) -> NewRecord<'_> {
    NewRecord {
        bytes,
        author: Some(AuthorPos { author, seq, prev }),
        epoch,
    }
}

pub fn anon(bytes: &[u8], epoch: Option<u64>) -> NewRecord<'_> {
    NewRecord {
        bytes,
        author: None,
        epoch,
    }
}

/// Builds `n` records of one author's chain starting at seq 1.
pub fn chain_of(author: u16, n: u64, epoch: Option<u64>) -> Vec<(Vec<u8>, AuthorPos, Option<u64>)> {
    let mut prev = ZERO_HASH;
    let mut out = Vec::new();
    for seq in 1..=n {
        let bytes = chained_bytes(author, seq, b"x");
        let pos = AuthorPos { author, seq, prev };
        prev = bankmesh_store::record_hash(&bytes);
        out.push((bytes, pos, epoch));
    }
    out
}

pub fn as_new(recs: &[(Vec<u8>, AuthorPos, Option<u64>)]) -> Vec<NewRecord<'_>> {
    recs.iter()
        .map(|(b, a, e)| NewRecord {
            bytes: b,
            author: Some(*a),
            epoch: *e,
        })
        .collect()
}
