//! A member's directory: `node.toml` (settings), `member.key` and `admin.token` (secrets, mode
//! 0600), `member.toml` (the public entry for the genesis) and `store/` (the sled log).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bankmesh_protocol::genesis::MemberInfo;
use bankmesh_protocol::{MemberIndex, MemberSecrets};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub const NODE_FILE: &str = "node.toml";
pub const MEMBER_FILE: &str = "member.toml";
pub const KEY_FILE: &str = "member.key";
pub const TOKEN_FILE: &str = "admin.token";

/// The admin API's address unless `init --admin` says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7300";

/// `node.toml`. Every field but `name` and `listen` has a default, so settings added later do
/// not break an existing file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub listen: Vec<String>,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    #[serde(default = "default_store")]
    pub store: PathBuf,
    /// How long our results of an epoch are kept after its decryption window closed
    /// (humantime, e.g. "90days"); then they are erased.
    #[serde(default = "default_results_retention")]
    pub results_retention: String,
}

/// Results are kept a quarter unless `node.toml` says otherwise.
pub const DEFAULT_RESULTS_RETENTION: &str = "90days";
/// The shortest retention accepted: an operator must have time to fetch the results.
const MIN_RESULTS_RETENTION: std::time::Duration = std::time::Duration::from_secs(60);

fn default_results_retention() -> String {
    DEFAULT_RESULTS_RETENTION.to_string()
}

fn default_admin() -> SocketAddr {
    DEFAULT_ADMIN
        .parse()
        .unwrap_or_else(|_| ([127, 0, 0, 1], 7300).into())
}
fn default_store() -> PathBuf {
    PathBuf::from("store")
}

impl NodeConfig {
    /// The file `init` writes: every setting with a comment.
    pub fn to_commented_toml(&self) -> String {
        let listen: Vec<String> = self.listen.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "# bankmesh node settings (read by `bankmesh run --dir`).\n\
             \n\
             # This member's name; it must match its entry in the consortium genesis.\n\
             name = {name:?}\n\
             \n\
             # libp2p addresses to listen on, TCP and QUIC (`/ip4/0.0.0.0/tcp/PORT`,\n\
             # `/ip4/0.0.0.0/udp/PORT/quic-v1`). Other members dial the addresses in member.toml.\n\
             listen = [{listen}]\n\
             \n\
             # The admin API (bearer token in admin.token). Loopback addresses only.\n\
             admin = \"{admin}\"\n\
             \n\
             # The sled store, relative to this directory.\n\
             store = {store:?}\n\
             \n\
             # How long this bank's results of an epoch are served after its decryption window\n\
             # closes (\"90days\", \"12h\", ...; at least 1 minute). Then they are erased. An epoch's\n\
             # scores, pseudonyms and one-time keys are erased as soon as its results are stored.\n\
             results_retention = {retention:?}\n",
            retention = self.results_retention,
            name = self.name,
            listen = listen.join(", "),
            admin = self.admin,
            store = self.store.display().to_string(),
        )
    }

    pub fn load(dir: &Path) -> Result<NodeConfig> {
        let path = dir.join(NODE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read the node settings (run `bankmesh init` first)",
                path.display()
            )
        })?;
        let config: NodeConfig =
            toml::from_str(&text).with_context(|| format!("{}: bad settings", path.display()))?;
        config
            .check()
            .with_context(|| format!("{}: bad settings", path.display()))?;
        Ok(config)
    }

    pub fn check(&self) -> Result<()> {
        check_name(&self.name)?;
        if self.listen.is_empty() {
            bail!("no listen address");
        }
        for a in &self.listen {
            parse_listen(a)?;
        }
        if !self.admin.ip().is_loopback() {
            bail!("admin address {} is not a loopback address", self.admin);
        }
        self.results_retention()?;
        Ok(())
    }

    /// `results_retention`, parsed and checked.
    pub fn results_retention(&self) -> Result<std::time::Duration> {
        let d = humantime::parse_duration(&self.results_retention).with_context(|| {
            format!(
                "results_retention = {:?} is not a duration (for instance \"90days\" or \"12h\")",
                self.results_retention
            )
        })?;
        if d < MIN_RESULTS_RETENTION {
            bail!(
                "results_retention = {:?} is shorter than 1 minute",
                self.results_retention
            );
        }
        Ok(d)
    }

    pub fn store_dir(&self, dir: &Path) -> PathBuf {
        dir.join(&self.store)
    }
}

pub fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        bail!("member name must be 1..=64 bytes without control characters, got {name:?}");
    }
    Ok(())
}

/// A listen address: TCP or QUIC, with an explicit port (others dial it from the genesis).
pub fn parse_listen(text: &str) -> Result<Multiaddr> {
    let addr: Multiaddr = text
        .parse()
        .with_context(|| format!("{text:?} is not a multiaddress"))?;
    let mut port = None;
    let mut quic = false;
    for p in addr.iter() {
        match p {
            Protocol::Tcp(n) | Protocol::Udp(n) => port = Some(n),
            Protocol::QuicV1 => quic = true,
            _ => {}
        }
    }
    let has_ip = addr
        .iter()
        .any(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_)));
    let tcp = addr.iter().any(|p| matches!(p, Protocol::Tcp(_)));
    if !has_ip || !(tcp || quic) {
        bail!("{text}: expected /ip4/ADDR/tcp/PORT or /ip4/ADDR/udp/PORT/quic-v1");
    }
    if port == Some(0) {
        bail!("{text}: give a fixed port; other members dial it from the genesis");
    }
    Ok(addr)
}

/// `member.toml`: what a member hands to whoever assembles the genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub name: String,
    pub identity: String,
    pub x25519: String,
    pub ring: String,
    pub addrs: Vec<String>,
}

impl MemberEntry {
    pub fn of(secrets: &MemberSecrets, name: &str, addrs: Vec<String>) -> MemberEntry {
        let info = secrets.member_info(1, name, addrs);
        MemberEntry {
            name: info.name,
            identity: hex::encode(info.identity),
            x25519: hex::encode(info.x25519),
            ring: hex::encode(info.ring),
            addrs: info.addrs,
        }
    }

    pub fn load(path: &Path) -> Result<MemberEntry> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the member entry", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: bad member entry", path.display()))
    }

    /// The genesis entry at `index`; the keys are checked when the genesis is validated.
    pub fn to_info(&self, index: MemberIndex) -> Result<MemberInfo> {
        let key = |field: &str, hex_text: &str| -> Result<[u8; 32]> {
            let bytes = hex::decode(hex_text)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            bytes.with_context(|| format!("member {:?}: {field} is not 32 hex bytes", self.name))
        };
        Ok(MemberInfo {
            index,
            name: self.name.clone(),
            identity: key("identity", &self.identity)?,
            x25519: key("x25519", &self.x25519)?,
            ring: key("ring", &self.ring)?,
            addrs: self.addrs.clone(),
        })
    }
}

/// Writes a new secret file with mode 0600; an existing file is never overwritten.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists: refusing to overwrite a key", path.display())
        } else {
            anyhow::anyhow!("{}: {e}", path.display())
        }
    })?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Reads a secret file, refusing one that others can read.
pub fn read_secret(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{}: mode {:o} lets others read it; run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(text)
}

pub fn load_secrets(dir: &Path) -> Result<MemberSecrets> {
    let path = dir.join(KEY_FILE);
    let text = read_secret(&path)?;
    let bytes = Zeroizing::new(
        hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 96]>::try_from(b).ok())
            .with_context(|| format!("{}: not a bankmesh member key", path.display()))?,
    );
    MemberSecrets::from_bytes(&bytes)
        .with_context(|| format!("{}: not a bankmesh member key", path.display()))
}

pub fn load_token(dir: &Path) -> Result<Zeroizing<String>> {
    let text = read_secret(&dir.join(TOKEN_FILE))?;
    Ok(Zeroizing::new(text.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn commented_settings_parse_back() {
        let c = NodeConfig {
            name: "Bank \"A\" ü".into(),
            listen: vec!["/ip4/0.0.0.0/tcp/7000".into()],
            admin: default_admin(),
            store: default_store(),
            results_retention: "12h 30m".into(),
        };
        let text = c.to_commented_toml();
        assert_eq!(toml::from_str::<NodeConfig>(&text).unwrap(), c);
        let minimal: NodeConfig =
            toml::from_str("name = \"a\"\nlisten = [\"/ip4/127.0.0.1/tcp/1\"]\n").unwrap();
        assert_eq!(minimal.store, default_store());
        assert_eq!(minimal.admin, default_admin());
        assert_eq!(
            minimal.results_retention().unwrap(),
            std::time::Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            c.results_retention().unwrap(),
            std::time::Duration::from_secs(45_000)
        );
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(parse_listen("/ip4/127.0.0.1/tcp/0").is_err());
        assert!(parse_listen("localhost:7000").is_err());
        assert!(parse_listen("/ip4/127.0.0.1/udp/7000").is_err());
        assert!(parse_listen("/ip4/127.0.0.1/udp/7000/quic-v1").is_ok());
        let mut c = NodeConfig {
            name: "a".into(),
            listen: vec!["/ip4/0.0.0.0/tcp/7000".into()],
            admin: "0.0.0.0:7300".parse().unwrap(),
            store: default_store(),
            results_retention: default_results_retention(),
        };
        assert!(c.check().unwrap_err().to_string().contains("loopback"));
        c.admin = default_admin();
        for bad in ["forever", "", "59s", "-1d"] {
            c.results_retention = bad.into();
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains("results_retention"), "{bad}: {e}");
        }
        c.results_retention = "1m".into();
        assert!(c.check().is_ok());
        c.name = "a\nb".into();
        assert!(c.check().is_err());
    }

    #[test]
    fn secret_files_are_private_and_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        write_secret(&p, b"abc").unwrap();
        assert!(write_secret(&p, b"xyz")
            .unwrap_err()
            .to_string()
            .contains("refusing to overwrite"));
        assert_eq!(read_secret(&p).unwrap().as_str(), "abc");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(read_secret(&p)
                .unwrap_err()
                .to_string()
                .contains("chmod 600"));
        }
    }

    #[test]
    fn member_entry_round_trips() {
        let s = MemberSecrets::generate(&mut OsRng);
        let e = MemberEntry::of(&s, "a", vec!["/ip4/1.2.3.4/tcp/7000".into()]);
        let back: MemberEntry = toml::from_str(&toml::to_string(&e).unwrap()).unwrap();
        assert_eq!(
            back.to_info(3).unwrap(),
            s.member_info(3, "a", e.addrs.clone())
        );
        let mut bad = e.clone();
        bad.ring = "zz".into();
        assert!(bad.to_info(1).is_err());
    }
}
