//! `bankmesh consortium assemble` and `show`: the genesis from the members' entries.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bankmesh_protocol::genesis::{default_seal_quorum, faulty, Consortium, Genesis, Timing};

use crate::config::MemberEntry;
use crate::net::peer_id_of;
use crate::peer::wall_clock;

pub struct AssembleArgs {
    pub name: String,
    pub threshold: u16,
    pub quorum: Option<u16>,
    /// Fewest holders for a result to be disclosed (genesis `privacy.min_count`).
    pub min_count: u16,
    pub epoch_seconds: u64,
    /// When setup starts (default: two minutes from now).
    pub start: Option<SystemTime>,
    pub setup_seconds: Option<u64>,
    pub round_ms: Option<u64>,
    pub clock_skew_ms: Option<u64>,
    pub members: Vec<PathBuf>,
}

fn unix_ms(t: SystemTime) -> Result<u64> {
    let d = t.duration_since(UNIX_EPOCH).context("start before 1970")?;
    Ok(u64::try_from(d.as_millis())?)
}

/// The schedule for epochs of `epoch_ms`: half of it for submissions, the seal as long as its
/// agreement rounds need (at least a quarter epoch), decryption a quarter epoch more.
fn timing(args: &AssembleArgs, start_ms: u64, n: usize) -> Result<Timing> {
    let epoch_ms = args
        .epoch_seconds
        .checked_mul(1000)
        .context("--epoch-seconds too large")?;
    let mut t = Timing::new(start_ms, 0, epoch_ms, epoch_ms / 2, 0, 0);
    if let Some(r) = args.round_ms {
        t.round_ms = r;
    }
    if let Some(s) = args.clock_skew_ms {
        t.clock_skew_ms = s;
    }
    if t.round_ms == 0 {
        bail!("--round-ms must be positive");
    }
    let rounds: u64 = (0..=faulty(n) as u64)
        .map(|r| 3 * (t.round_ms + t.round_ms * r / 2))
        .sum();
    let seal_needs = t.clock_skew_ms + rounds;
    t.seal_ms = seal_needs.max(epoch_ms / 4);
    t.decrypt_ms = (epoch_ms / 4).max(seal_needs);
    // Every epoch has its own setup, in the time before it starts: at most an epoch.
    t.dkg_ms = match args.setup_seconds {
        Some(s) => s.checked_mul(1000).context("--setup-seconds too large")?,
        None => epoch_ms,
    };
    if t.dkg_ms > epoch_ms {
        bail!(
            "--setup-seconds {} exceeds --epoch-seconds {}: each epoch's setup runs during the epoch before",
            t.dkg_ms / 1000,
            args.epoch_seconds
        );
    }
    if t.submit_ms < 1000 {
        bail!("--epoch-seconds {} is too short", args.epoch_seconds);
    }
    // One epoch's seal and decryption are over before the next one's seal begins.
    if t.seal_ms + t.decrypt_ms > epoch_ms {
        bail!(
            "epochs of {} s cannot fit the seal, which needs {} ms for {} agreement rounds and the clock skew: give a longer --epoch-seconds or a shorter --round-ms",
            args.epoch_seconds,
            seal_needs,
            faulty(n) + 1
        );
    }
    if t.dkg_ms < 3 * t.round_ms {
        bail!("--setup-seconds is too short for one setup attempt");
    }
    Ok(t)
}

pub fn assemble(args: &AssembleArgs) -> Result<Genesis> {
    if args.members.is_empty() {
        bail!("give every member's entry with --member DIR/member.toml");
    }
    let mut members = Vec::new();
    for (pos, path) in args.members.iter().enumerate() {
        let entry = MemberEntry::load(path)?;
        let index = u16::try_from(pos + 1)?;
        members.push(
            entry
                .to_info(index)
                .with_context(|| path.display().to_string())?,
        );
    }
    let n = members.len();
    for (i, a) in members.iter().enumerate() {
        for (j, b) in members.iter().enumerate().skip(i + 1) {
            if a.identity == b.identity || a.x25519 == b.x25519 || a.ring == b.ring {
                bail!(
                    "{} and {} hold the same keys: every member needs its own `bankmesh init`",
                    args.members[i].display(),
                    args.members[j].display()
                );
            }
            if a.name == b.name {
                bail!(
                    "{} and {} have the same name {:?}",
                    args.members[i].display(),
                    args.members[j].display(),
                    a.name
                );
            }
        }
    }
    let f = faulty(n);
    let t = usize::from(args.threshold);
    if t <= f || t > n - f {
        bail!(
            "--threshold {t} must be in {}..={} for {n} members (f = {f}: more than f so that f members cannot decrypt, at most n - f so that the others can)",
            f + 1,
            n - f
        );
    }
    let q_min = usize::from(default_seal_quorum(n));
    let q = usize::from(args.quorum.unwrap_or(default_seal_quorum(n)));
    if q < q_min || q > n - f {
        bail!(
            "--quorum {q} must be in {q_min}..={} for {n} members",
            n - f
        );
    }
    if args.min_count == 0 || usize::from(args.min_count) > n {
        bail!(
            "--min-count {} must be in 1..={n} (a result is withheld when fewer banks hold the client)",
            args.min_count
        );
    }
    let start = match args.start {
        Some(s) => s,
        None => wall_clock() + Duration::from_secs(120),
    };
    let start_ms = unix_ms(start)?;
    // Whole seconds read better in the file.
    let start_ms = start_ms.div_ceil(1000) * 1000;
    if args.start.is_some() && start < wall_clock() {
        bail!("--start is in the past");
    }
    let mut genesis = Genesis::new(
        &args.name,
        args.threshold,
        timing(args, start_ms, n)?,
        members,
    );
    genesis.seal_quorum = u16::try_from(q)?;
    genesis.privacy.min_count = args.min_count;
    genesis.validate()?;
    Ok(genesis)
}

/// The file `assemble` writes: the genesis with a header naming its id.
pub fn genesis_file(genesis: &Genesis) -> Result<String> {
    let consortium = Consortium::new(genesis.clone())?;
    Ok(format!(
        "# bankmesh consortium genesis. Every member runs with this same file.\n\
         # consortium id: {}\n\n{}",
        hex::encode(consortium.id),
        genesis.to_toml()
    ))
}

pub fn load(path: &Path) -> Result<Consortium> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the consortium genesis", path.display()))?;
    let genesis = Genesis::from_toml(&text).with_context(|| format!("{}", path.display()))?;
    Ok(Consortium::new(genesis)?)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `consortium show`: the genesis for a human.
pub fn describe(c: &Consortium) -> String {
    let g = &c.genesis;
    let t = &g.timing;
    let mut s = format!(
        "consortium {:?}\nid:         {}\nversion:    {}\nmembers:    {} (tolerates f = {} faulty)\nthreshold:  {}\nquorum:     {}\noprf quota: {} per member and epoch\nmin count:  {} (results of clients held by fewer banks are withheld)\n",
        g.name,
        hex::encode(c.id),
        g.version,
        c.n(),
        c.faulty(),
        g.threshold,
        g.seal_quorum,
        g.oprf_quota,
        g.privacy.min_count
    );
    s.push_str(&format!(
        "setup:      {} to {}\nepoch 1:    starts {}; every {} s: submit {} s, seal {} s, decrypt {} s\nrounds:     {} ms, clock skew bound {} ms\n",
        rfc3339(t.start_ms),
        rfc3339(c.dkg_deadline().0),
        rfc3339(c.epoch_start(1).0),
        t.epoch_ms / 1000,
        t.submit_ms / 1000,
        t.seal_ms / 1000,
        t.decrypt_ms / 1000,
        t.round_ms,
        t.clock_skew_ms
    ));
    s.push_str("\nindex  name                 peer id                                               addresses\n");
    for m in &g.members {
        let peer = peer_id_of(&m.identity).map_or_else(|_| "?".into(), |p| p.to_string());
        s.push_str(&format!(
            "{:<6} {:<20} {:<53} {}\n",
            m.index,
            m.name,
            peer,
            m.addrs.join(" ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{self, InitArgs};

    fn members(dir: &Path, n: usize) -> Vec<PathBuf> {
        (1..=n)
            .map(|i| {
                let d = dir.join(format!("m{i}"));
                init::run(&InitArgs {
                    name: format!("bank-{i}"),
                    dir: d.clone(),
                    listen: vec![format!("/ip4/127.0.0.1/tcp/{}", 7000 + i)],
                    advertise: vec![],
                    admin: format!("127.0.0.1:{}", 7100 + i).parse().unwrap(),
                })
                .unwrap();
                d.join("member.toml")
            })
            .collect()
    }

    fn args(members: Vec<PathBuf>, threshold: u16) -> AssembleArgs {
        AssembleArgs {
            name: "c".into(),
            threshold,
            quorum: None,
            min_count: 1,
            epoch_seconds: 60,
            start: None,
            setup_seconds: None,
            round_ms: None,
            clock_skew_ms: None,
            members,
        }
    }

    #[test]
    fn assembles_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let g = assemble(&args(members(d.path(), 5), 3)).unwrap();
        let text = genesis_file(&g).unwrap();
        let path = d.path().join("consortium.toml");
        std::fs::write(&path, &text).unwrap();
        let c = load(&path).unwrap();
        assert_eq!(c.genesis, g);
        assert!(text.contains(&hex::encode(c.id)));
        let shown = describe(&c);
        assert!(shown.contains("bank-5") && shown.contains(&hex::encode(c.id)));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let d = tempfile::tempdir().unwrap();
        let ms = members(d.path(), 4);
        // n = 4, f = 1: t in 2..=3, q in 3..=3.
        for t in [1, 4] {
            let e = assemble(&args(ms.clone(), t)).unwrap_err().to_string();
            assert!(e.contains("--threshold"), "{e}");
        }
        let mut a = args(ms.clone(), 2);
        a.quorum = Some(4);
        assert!(assemble(&a).unwrap_err().to_string().contains("--quorum"));
        for bad in [0, 5] {
            let mut a = args(ms.clone(), 2);
            a.min_count = bad;
            let e = assemble(&a).unwrap_err().to_string();
            assert!(e.contains("--min-count") && e.contains("1..=4"), "{e}");
        }
        let mut a = args(ms.clone(), 2);
        a.min_count = 3;
        assert_eq!(assemble(&a).unwrap().privacy.min_count, 3);
        let mut a = args(
            vec![ms[0].clone(), ms[0].clone(), ms[1].clone(), ms[2].clone()],
            2,
        );
        assert!(assemble(&a).unwrap_err().to_string().contains("same keys"));
        a = args(ms.clone(), 2);
        a.setup_seconds = Some(61);
        assert!(assemble(&a)
            .unwrap_err()
            .to_string()
            .contains("--setup-seconds 61"));
        a = args(ms.clone(), 2);
        a.epoch_seconds = 8;
        assert!(assemble(&a).unwrap_err().to_string().contains("cannot fit"));
        a = args(ms.clone(), 2);
        a.start = Some(wall_clock() - Duration::from_secs(10));
        assert!(assemble(&a).unwrap_err().to_string().contains("past"));
        a = args(vec![d.path().join("missing.toml")], 2);
        assert!(assemble(&a).is_err());
    }
}
