//! A node's local, non-replicated state (DESIGN 8: persist every accepted input before acting
//! on it): the operator's scores and our clients' OPRF outputs, per epoch. With them and the
//! log, a restarted bank recognizes its own submissions and opens its results.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// One durable write to the node's local area. The value may be secret: it is zeroized and
/// never printed.
#[derive(PartialEq, Eq)]
pub struct LocalWrite {
    pub key: String,
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for LocalWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalWrite({}, <{} bytes redacted>)",
            self.key,
            self.value.len()
        )
    }
}

/// Key of the list of epochs for which we hold scores.
pub const EPOCHS: &str = "epochs";

pub fn scores_key(epoch: u64) -> String {
    format!("epoch/{epoch}/scores")
}

pub fn pseudonyms_key(epoch: u64) -> String {
    format!("epoch/{epoch}/pseudonyms")
}

#[derive(Serialize, Deserialize)]
struct Pseudonym {
    client: u32,
    output: Vec<u8>,
}

fn write(key: String, value: Vec<u8>) -> LocalWrite {
    LocalWrite {
        key,
        value: Zeroizing::new(value),
    }
}

pub(crate) fn epochs(list: &[u64]) -> LocalWrite {
    write(EPOCHS.into(), postcard::to_stdvec(list).unwrap_or_default())
}

pub(crate) fn scores(epoch: u64, scores: &[(String, u16)]) -> LocalWrite {
    write(
        scores_key(epoch),
        postcard::to_stdvec(scores).unwrap_or_default(),
    )
}

pub(crate) fn pseudonyms(epoch: u64, list: &[(usize, [u8; 64])]) -> LocalWrite {
    let list: Vec<Pseudonym> = list
        .iter()
        .map(|(c, y)| Pseudonym {
            client: u32::try_from(*c).unwrap_or(u32::MAX),
            output: y.to_vec(),
        })
        .collect();
    write(
        pseudonyms_key(epoch),
        postcard::to_stdvec(&list).unwrap_or_default(),
    )
}

pub fn decode_epochs(bytes: &[u8]) -> Option<Vec<u64>> {
    postcard::from_bytes(bytes).ok()
}

pub fn decode_scores(bytes: &[u8]) -> Option<Vec<(String, u16)>> {
    postcard::from_bytes(bytes).ok()
}

pub fn decode_pseudonyms(bytes: &[u8]) -> Option<Vec<(usize, [u8; 64])>> {
    let list: Vec<Pseudonym> = postcard::from_bytes(bytes).ok()?;
    list.into_iter()
        .map(|p| {
            Some((
                usize::try_from(p.client).ok()?,
                p.output.as_slice().try_into().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(decode_epochs(&epochs(&[1, 2]).value), Some(vec![1, 2]));
        let s = vec![("a".to_string(), 3u16)];
        assert_eq!(decode_scores(&scores(1, &s).value), Some(s));
        let p = vec![(4usize, [7u8; 64])];
        assert_eq!(decode_pseudonyms(&pseudonyms(1, &p).value), Some(p));
        assert_eq!(
            decode_pseudonyms(b"\x01\x00\x02ab"),
            None,
            "a 2-byte output is refused"
        );
    }
}
