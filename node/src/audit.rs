//! `bankmesh audit`: export a node's log as a bundle, verify a bundle offline, summarize one.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bankmesh_protocol::genesis::{Consortium, Genesis};
use bankmesh_store::audit::{self, ExportSummary, Line, Verified};
use bankmesh_store::Store;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::NodeConfig;

/// Writes the log of the node in `dir` (stopped: sled holds its store locked) to `out`.
pub fn export(dir: &Path, consortium: &Path, out: &Path) -> Result<ExportSummary> {
    let config = NodeConfig::load(dir)?;
    export_store(&config.store_dir(dir), consortium, out)
}

/// Writes the log of the store in `store_dir` to `out`, with the genesis in `consortium`.
pub fn export_store(store_dir: &Path, consortium: &Path, out: &Path) -> Result<ExportSummary> {
    let text = std::fs::read_to_string(consortium)
        .with_context(|| format!("{}: cannot read the genesis", consortium.display()))?;
    let c = crate::consortium::load(consortium)?;
    if !store_dir.exists() {
        bail!("{}: no store here", store_dir.display());
    }
    let (store, _) = Store::open(store_dir).with_context(|| {
        format!(
            "opening the store {} (stop the node first: its store is locked while it runs)",
            store_dir.display()
        )
    })?;
    // Written beside, then renamed: a bundle is never seen half-written.
    let partial = out.with_extension("partial");
    let file =
        File::create(&partial).with_context(|| format!("{}: cannot create", partial.display()))?;
    let mut writer = BufWriter::new(file);
    let summary = audit::export(&store, &c, &text, &mut writer)?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&partial, out).with_context(|| format!("{}: cannot write", out.display()))?;
    Ok(summary)
}

/// Verifies `bundle` against the genesis in `consortium`, showing progress on stderr.
pub fn verify(bundle: &Path, consortium: &Path) -> Result<Verified> {
    let c = crate::consortium::load(consortium)?;
    verify_with(bundle, &c)
}

fn verify_with(bundle: &Path, c: &Consortium) -> Result<Verified> {
    let file = File::open(bundle)
        .with_context(|| format!("{}: cannot read the bundle", bundle.display()))?;
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{spinner} verifying records {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    let verified = audit::verify(BufReader::new(file), c, |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    Ok(verified)
}

/// Whether `newer` extends the checkpoint log of `older` (see [`audit::extends`]).
pub fn extends(older: &Path, newer: &Path) -> Result<(), String> {
    let open = |p: &Path| {
        File::open(p)
            .map(BufReader::new)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    audit::extends(open(older)?, open(newer)?)
}

/// The report of `audit verify`, for a human.
pub fn report(v: &Verified) -> String {
    let mut s = String::new();
    for f in &v.failures {
        s.push_str(&format!("FAIL {f}\n"));
    }
    for f in &v.unjudged {
        s.push_str(&format!("NOTE {f} (kept unjudged, as members keep it)\n"));
    }
    let verdict = if v.ok() { "holds" } else { "does NOT hold" };
    s.push_str(&format!(
        "bundle {verdict}: {} records, {} evidence, {} checkpoints checked; {} failures\n",
        v.records,
        v.evidence,
        v.checkpoints,
        v.failures.len()
    ));
    s
}

/// `audit show`: a summary per epoch. The genesis is the bundle's own (shown, not trusted:
/// `audit verify` checks it against the auditor's).
pub fn show(bundle: &Path) -> Result<String> {
    let file = File::open(bundle)
        .with_context(|| format!("{}: cannot read the bundle", bundle.display()))?;
    let mut genesis = None;
    for line in std::io::BufRead::lines(BufReader::new(file)).take(2) {
        if let Ok(Line::Genesis { toml }) = serde_json::from_str::<Line>(&line?) {
            genesis = Some(Genesis::from_toml(&toml)?);
        }
    }
    let Some(genesis) = genesis else {
        bail!("{}: no genesis in its first lines", bundle.display());
    };
    let c = Consortium::new(genesis)?;
    let v = verify_with(bundle, &c)?;
    let mut s = format!(
        "consortium {:?} ({}), {} members\n",
        c.genesis.name,
        hex::encode(&c.id[..8]),
        c.n()
    );
    for (epoch, e) in &v.epochs {
        s.push_str(&format!("epoch {epoch}\n"));
        s.push_str(&format!(
            "  members posting: {}\n",
            e.authors
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let kinds: Vec<String> = e.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s.push_str(&format!("  records: {}\n", kinds.join(", ")));
        match e.sealed {
            Some(sealed) => s.push_str(&format!(
                "  submissions: {} on the log, {sealed} sealed, {} left out\n",
                e.submissions, e.excluded
            )),
            None => s.push_str(&format!(
                "  submissions: {} on the log, not sealed\n",
                e.submissions
            )),
        }
        let mut by_count: std::collections::BTreeMap<u32, u64> = Default::default();
        for n in e.tags.values() {
            *by_count.entry(*n).or_default() += 1;
        }
        let counts: Vec<String> = by_count
            .iter()
            .map(|(n, tags)| format!("{tags} with {n}"))
            .collect();
        s.push_str(&format!(
            "  tags: {} ({})\n",
            e.tags.len(),
            counts.join(", ")
        ));
        if e.faults.is_empty() {
            s.push_str("  faults: none\n");
        }
        for (m, kind) in &e.faults {
            s.push_str(&format!("  fault: member {m} for {kind}\n"));
        }
    }
    if !v.ok() {
        s.push_str(&format!(
            "{} failures: run `bankmesh audit verify` for them\n",
            v.failures.len()
        ));
    }
    Ok(s)
}
