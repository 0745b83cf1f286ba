//! The demo's files: per-bank score CSVs in, per-bank result CSVs out, and a synthetic data set.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bankmesh_protocol::{ClientResult, CLIENT_ID_MAX, SCORE_MAX};
use rand_core::{RngCore, SeedableRng};

/// One bank's clients and scores, in file order.
pub type Scores = Vec<(String, u16)>;

/// A problem with an input file, naming the file and line (DESIGN: bad operator input gets a
/// clear message and a non-zero exit, before any network work).
#[derive(Debug)]
pub enum InputError {
    Missing(PathBuf),
    Line {
        file: PathBuf,
        line: u64,
        reason: String,
    },
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::Missing(p) => write!(f, "{}: file not found", p.display()),
            InputError::Line { file, line, reason } => {
                write!(f, "{}:{line}: {reason}", file.display())
            }
        }
    }
}

impl std::error::Error for InputError {}

/// The input file of bank `i` in `dir`.
pub fn bank_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("bank-{i}.csv"))
}

/// Reads `client_id,score` rows: ids of 1..=128 bytes, unique in the file; scores 0..=1023.
pub fn read_scores(path: &Path) -> Result<Scores, InputError> {
    if !path.is_file() {
        return Err(InputError::Missing(path.to_path_buf()));
    }
    let data = std::fs::read(path).map_err(|e| InputError::Line {
        file: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })?;
    parse_scores(path, &data)
}

/// Parses `client_id,score` rows from `data`; errors name `path` (a file, or what the bytes
/// came from) and the physical line.
pub fn parse_scores(path: &Path, data: &[u8]) -> Result<Scores, InputError> {
    let line_err = |line: u64, reason: String| InputError::Line {
        file: path.to_path_buf(),
        line,
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(data);
    let headers = reader
        .headers()
        .map_err(|e| line_err(1, e.to_string()))?
        .clone();
    if headers.iter().collect::<Vec<_>>() != ["client_id", "score"] {
        return Err(line_err(
            1,
            format!(
                "header must be `client_id,score`, found `{}`",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| physical_line(data, p));
            line_err(line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| physical_line(data, p));
        let (Some(id), Some(score)) = (record.get(0), record.get(1)) else {
            return Err(line_err(line, "expected two fields".into()));
        };
        if id.is_empty() || id.len() > CLIENT_ID_MAX {
            return Err(line_err(
                line,
                format!("client id must be 1..={CLIENT_ID_MAX} bytes"),
            ));
        }
        // Spreadsheet exports often pad numbers; ids are taken exactly as written.
        let score: u16 = score
            .trim()
            .parse()
            .ok()
            .filter(|s| *s <= SCORE_MAX)
            .ok_or_else(|| {
                line_err(
                    line,
                    format!("score `{score}` is not an integer in 0..={SCORE_MAX}"),
                )
            })?;
        if !seen.insert(id.to_string()) {
            return Err(line_err(line, format!("duplicate client id `{id}`")));
        }
        rows.push((id.to_string(), score));
    }
    Ok(rows)
}

/// The line an editor shows for a record: csv counts records, not the line breaks inside
/// quoted fields, so count the breaks before the record's first byte (csv's position may
/// point at the end of the line before it).
fn physical_line(data: &[u8], pos: &csv::Position) -> u64 {
    let mut start = usize::try_from(pos.byte())
        .unwrap_or(usize::MAX)
        .min(data.len());
    while data.get(start).is_some_and(|b| *b == b'\n' || *b == b'\r') {
        start += 1;
    }
    let breaks = data
        .get(..start)
        .map_or(0, |d| d.iter().filter(|b| **b == b'\n').count());
    1 + breaks as u64
}

pub fn write_scores(path: &Path, rows: &Scores) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["client_id", "score"])?;
    for (id, score) in rows {
        w.write_record([id.as_str(), &score.to_string()])?;
    }
    w.flush()
}

/// Writes `client_id,average,count`, one row per client in `order`; the average of a result
/// withheld below the consortium's `min_count` is written `withheld`.
pub fn write_results(path: &Path, order: &Scores, results: &[ClientResult]) -> std::io::Result<()> {
    let by_id: std::collections::HashMap<&str, &ClientResult> =
        results.iter().map(|r| (r.client_id.as_str(), r)).collect();
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["client_id", "average", "count"])?;
    for (id, _) in order {
        if let Some(r) = by_id.get(id.as_str()) {
            w.write_record([id.as_str(), &r.average_2dp(), &r.count.to_string()])?;
        }
    }
    w.flush()
}

/// A realistic synthetic consortium: each client is held by 1 to `banks` banks (most by one or
/// two), banks' scores for one client cluster around a client-specific level, and the range
/// limits 0 and 1023 occur.
pub fn synthetic(banks: usize, clients_per_bank: usize, seed: u64) -> Vec<Scores> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut out = vec![Vec::new(); banks];
    let pool = (banks * clients_per_bank * 10 / 17).max(1);
    let mut next = |bound: u64| rng.next_u64() % bound.max(1);
    for c in 0..pool {
        // Holder count: 1 (45%), 2 (25%), 3 (15%), 4 (10%), 5+ (5%), capped at the bank count.
        let roll = next(100);
        let holders = match roll {
            0..=44 => 1,
            45..=69 => 2,
            70..=84 => 3,
            85..=94 => 4,
            _ => 5,
        }
        .min(banks);
        let mut chosen: Vec<usize> = (0..banks).collect();
        for i in 0..holders {
            let j = i + next((banks - i) as u64) as usize;
            chosen.swap(i, j);
        }
        let level = 300 + next(551) as i64;
        for &b in chosen.iter().take(holders) {
            let noise = next(121) as i64 - 60;
            let score = match c % 97 {
                0 => 0,
                1 => 1023,
                _ => (level + noise).clamp(0, i64::from(SCORE_MAX)),
            };
            if let Some(bank) = out.get_mut(b) {
                bank.push((format!("client-{c:05}"), u16::try_from(score).unwrap_or(0)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_quoted_ids_and_limits() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "b.csv",
            "client_id,score\n\"a,b \"\"q\"\"\",0\nü-1,1023\n",
        );
        assert_eq!(
            read_scores(&p).unwrap(),
            vec![("a,b \"q\"".to_string(), 0), ("ü-1".to_string(), 1023)]
        );
        let p = write(d.path(), "c.csv", "\u{feff}client_id,score\r\n x ,  7 \r\n");
        assert_eq!(
            read_scores(&p).unwrap(),
            vec![(" x ".to_string(), 7)],
            "BOM, CRLF, padded score"
        );
    }

    #[test]
    fn names_file_and_line_of_bad_input() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            ("client_id,points\nx,1\n", ":1: header"),
            ("client_id,score\nx,1\ny,1024\n", ":3: score `1024`"),
            ("client_id,score\nx,1.5\n", ":2: score `1.5`"),
            ("client_id,score\nx,-1\n", ":2: score `-1`"),
            ("client_id,score\nx,1\nx,2\n", ":3: duplicate client id `x`"),
            ("client_id,score\n,1\n", ":2: client id"),
            (
                "client_id,score\r\n\"a\r\nb\",1\r\nc,x\r\n",
                ":4: score `x`",
            ),
            (
                "\u{feff}client_id,score\n\"q\n\n\",1\nd,1\nd,2\n",
                ":6: duplicate",
            ),
            ("client_id,score\nx,1,2\n", ":2:"),
        ];
        for (text, expected) in cases {
            let p = write(d.path(), "bank-1.csv", text);
            let err = read_scores(&p).unwrap_err().to_string();
            assert!(
                err.contains("bank-1.csv") && err.contains(expected),
                "{err} lacks {expected}"
            );
        }
        let long = format!("client_id,score\n{},1\n", "x".repeat(129));
        let p = write(d.path(), "bank-1.csv", &long);
        assert!(read_scores(&p)
            .unwrap_err()
            .to_string()
            .contains(":2: client id"));
        assert!(read_scores(&d.path().join("nope.csv"))
            .unwrap_err()
            .to_string()
            .contains("not found"));
    }

    #[test]
    fn synthetic_overlaps_and_hits_limits() {
        let sets = synthetic(5, 200, 7);
        assert_eq!(sets.len(), 5);
        let total: usize = sets.iter().map(Vec::len).sum();
        assert!((800..=1300).contains(&total), "{total}");
        let all: Vec<&(String, u16)> = sets.iter().flatten().collect();
        assert!(all.iter().any(|(_, s)| *s == 0) && all.iter().any(|(_, s)| *s == 1023));
        let shared = sets[0]
            .iter()
            .filter(|(id, _)| sets[1..].iter().any(|b| b.iter().any(|(j, _)| j == id)))
            .count();
        assert!(shared > 0);
        assert_eq!(synthetic(5, 200, 7), sets);
    }
}
