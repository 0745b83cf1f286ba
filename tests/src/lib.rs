//! Helpers for the end-to-end tests: the release `bankmesh` binary, consortia of real
//! `bankmesh run` processes on loopback set up only through the operator's commands, and the
//! plaintext results to compare with.

// End-to-end tests wait on real processes: reading the clock is what they are for.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One bank's scores, in file order.
pub type Scores = Vec<(String, u16)>;

/// The release `bankmesh` binary next to the test's own target directory.
pub fn bankmesh() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = dir.join(format!("bankmesh{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release --workspace --all-targets` first",
        bin.display()
    );
    bin
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bankmesh())
        .args(args)
        .output()
        .expect("run bankmesh")
}

/// Runs `bankmesh` and returns stdout, failing the test with stderr if it fails.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "bankmesh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn write_csv(path: &Path, rows: &[(String, u16)]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["client_id", "score"]).unwrap();
    for (id, s) in rows {
        w.write_record([id.as_str(), &s.to_string()]).unwrap();
    }
    w.flush().unwrap();
}

/// Expected `average` (two decimals, half up) and count per client, from plaintext inputs.
pub fn expected(inputs: &[Scores]) -> BTreeMap<String, (String, u32)> {
    let mut acc: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    for rows in inputs {
        for (id, s) in rows {
            let e = acc.entry(id.clone()).or_default();
            e.0 += u64::from(*s);
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(id, (sum, count))| {
            let c = u64::from(count);
            let hundredths = (sum * 200 + c) / (2 * c);
            (
                id,
                (
                    format!("{}.{:02}", hundredths / 100, hundredths % 100),
                    count,
                ),
            )
        })
        .collect()
}

/// Banks' scores for one epoch: clients held by 1 to all banks, the range limits, ids with
/// commas, quotes and non-ASCII characters, ids near the length limit.
pub fn scores(banks: usize, clients: u32, seed: u64) -> Vec<Scores> {
    let mut out: Vec<Scores> = vec![Vec::new(); banks];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for c in 0..clients {
        let holders = 1 + (next() % banks as u64) as usize;
        let first = (next() % banks as u64) as usize;
        for k in 0..holders {
            let score = match c % 11 {
                0 => 0,
                1 => 1023,
                _ => (next() % 1024) as u16,
            };
            let id = match c % 13 {
                0 => format!("Ünïcødé, \"quoted\" client {c}"),
                1 => format!("{c}:{}", "x".repeat(120)),
                _ => format!("client-{c}"),
            };
            out[(first + k) % banks].push((id, score));
        }
    }
    out
}

/// One member: its directory, admin port and process while it runs.
pub struct Node {
    pub dir: PathBuf,
    pub admin: u16,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Node {
    pub fn dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

/// A consortium of `bankmesh run` processes on loopback.
pub struct Consortium {
    _root: tempfile::TempDir,
    pub root: PathBuf,
    pub genesis: PathBuf,
    pub nodes: Vec<Node>,
}

pub struct Schedule {
    pub threshold: u16,
    pub epoch_seconds: u64,
    pub setup_seconds: u64,
    /// Setup starts this long after assembly.
    pub start_in: Duration,
}

/// `bankmesh init` for a member `name` in `root/name`.
pub fn init(root: &Path, name: &str) -> Node {
    let dir = root.join(name);
    let port = free_port();
    let admin = free_port();
    run_ok(&[
        "init",
        "--name",
        name,
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--listen",
        &format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let log = root.join(format!("{name}.log"));
    Node {
        dir,
        admin,
        child: None,
        log,
    }
}

/// `bankmesh consortium assemble` over the given member directories.
pub fn assemble(nodes: &[&Node], schedule: &Schedule, out: &Path) {
    let start = std::time::SystemTime::now() + schedule.start_in;
    let start = humantime::format_rfc3339_seconds(start).to_string();
    let threshold = schedule.threshold.to_string();
    let epoch = schedule.epoch_seconds.to_string();
    let setup = schedule.setup_seconds.to_string();
    let mut args = vec![
        "consortium",
        "assemble",
        "--name",
        "e2e",
        "--threshold",
        &threshold,
        "--epoch-seconds",
        &epoch,
        "--setup-seconds",
        &setup,
        "--round-ms",
        "500",
        "--start",
        &start,
        "--out",
        out.to_str().unwrap(),
    ];
    let members: Vec<String> = nodes
        .iter()
        .map(|n| n.dir.join("member.toml").to_str().unwrap().to_string())
        .collect();
    for m in &members {
        args.push("--member");
        args.push(m);
    }
    run_ok(&args);
}

impl Consortium {
    /// `n` members set up through `init` and `consortium assemble`, not yet running.
    pub fn new(n: usize, schedule: &Schedule) -> Consortium {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().to_path_buf();
        let nodes: Vec<Node> = (1..=n).map(|i| init(&path, &format!("bank-{i}"))).collect();
        let genesis = path.join("consortium.toml");
        assemble(&nodes.iter().collect::<Vec<_>>(), schedule, &genesis);
        Consortium {
            _root: root,
            root: path,
            genesis,
            nodes,
        }
    }

    /// Starts member `i` (0-based), logging to its log file.
    pub fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(bankmesh())
            .args(["run", "--dir", node.dir.to_str().unwrap(), "--consortium"])
            .arg(&self.genesis)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bankmesh run");
        node.child = Some(child);
        self.wait_up(i);
    }

    /// Waits until member `i`'s admin API answers; fails with its log if it exits.
    fn wait_up(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.nodes[i].admin)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                panic!("member {} exited ({status}):\n{}", i + 1, self.log_tail(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("member {} did not start:\n{}", i + 1, self.log_tail(i));
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit and returns whether it was one.
    pub fn stop(&mut self, i: usize) -> bool {
        let Some(mut c) = self.nodes[i].child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        false
    }

    pub fn dir(&self, i: usize) -> &str {
        self.nodes[i].dir()
    }

    /// `bankmesh status --json` of member `i`, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = run(&["status", "--dir", self.dir(i), "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The phase of `epoch` at member `i` (`submit`, `seal`, `decrypt`, `done`), if known.
    pub fn phase(&self, i: usize, epoch: u64) -> Option<String> {
        let s = self.status(i)?;
        s["epochs"].as_array()?.iter().find_map(|e| {
            (e["epoch"].as_u64() == Some(epoch)).then(|| e["phase"].as_str().unwrap().to_string())
        })
    }

    /// Waits until member `i` reports `epoch` in one of `phases`; the phase it saw last.
    pub fn wait_phase(&self, i: usize, epoch: u64, phases: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(p) = self.phase(i, epoch) {
                if phases.contains(&p.as_str()) {
                    return p;
                }
                last = p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "member {} never reached {phases:?} in epoch {epoch} (last: {last:?}); log:\n{}",
            i + 1,
            self.log_tail(i)
        );
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Submits `rows` at member `i` for `epoch` through `bankmesh submit`.
    pub fn submit(&self, i: usize, epoch: u64, rows: &[(String, u16)]) {
        let file = self.root.join(format!("scores-{}-{epoch}.csv", i + 1));
        write_csv(&file, rows);
        let out = run_ok(&[
            "submit",
            "--dir",
            self.dir(i),
            file.to_str().unwrap(),
            "--epoch",
            &epoch.to_string(),
        ]);
        assert_eq!(out.trim(), format!("epoch: {epoch}"));
    }

    /// `bankmesh results --wait` of member `i`, parsed.
    pub fn results(&self, i: usize, epoch: u64, wait: Duration) -> BTreeMap<String, (String, u32)> {
        let out = run(&[
            "results",
            "--dir",
            self.dir(i),
            "--epoch",
            &epoch.to_string(),
            "--wait",
            &wait.as_secs().to_string(),
        ]);
        assert!(
            out.status.success(),
            "results of member {} for epoch {epoch}: {}\nlog:\n{}",
            i + 1,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(i)
        );
        let mut r = csv::Reader::from_reader(&out.stdout[..]);
        assert_eq!(r.headers().unwrap(), vec!["client_id", "average", "count"]);
        r.records()
            .map(|rec| {
                let rec = rec.unwrap();
                (
                    rec[0].to_string(),
                    (rec[1].to_string(), rec[2].parse().unwrap()),
                )
            })
            .collect()
    }

    /// Checks member `i`'s results for `epoch` against the plaintext over every bank's input.
    pub fn assert_exact(&self, i: usize, epoch: u64, inputs: &[Scores], wait: Duration) {
        let truth = expected(inputs);
        let got = self.results(i, epoch, wait);
        let mine: BTreeMap<String, (String, u32)> = inputs[i]
            .iter()
            .map(|(id, _)| (id.clone(), truth[id].clone()))
            .collect();
        assert_eq!(got, mine, "member {} epoch {epoch}", i + 1);
    }
}

impl Drop for Consortium {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Whatever failed, the members' own account of it.
            for i in 0..self.nodes.len() {
                eprintln!(
                    "--- member {} log (last lines):\n{}",
                    i + 1,
                    self.log_tail(i)
                );
            }
        }
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// One raw HTTP/1.1 request to a node's admin API: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin API reachable");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn token(node: &Node) -> String {
    std::fs::read_to_string(node.dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}
