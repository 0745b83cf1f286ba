//! `bankmesh init`: a new member directory with its keys, settings and public entry.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bankmesh_protocol::MemberSecrets;
use libp2p::multiaddr::Protocol;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::config::{
    check_name, parse_listen, write_secret, MemberEntry, NodeConfig, KEY_FILE, MEMBER_FILE,
    NODE_FILE, TOKEN_FILE,
};
use crate::net::peer_id_of;

pub struct InitArgs {
    pub name: String,
    pub dir: PathBuf,
    pub listen: Vec<String>,
    /// Addresses other members dial; by default the listen addresses.
    pub advertise: Vec<String>,
    pub admin: std::net::SocketAddr,
}

/// What `init` made, for the operator.
#[derive(Debug)]
pub struct Initialised {
    pub peer_id: String,
    pub member_file: PathBuf,
}

pub fn run(args: &InitArgs) -> Result<Initialised> {
    check_name(&args.name)?;
    let config = NodeConfig {
        name: args.name.clone(),
        listen: args.listen.clone(),
        admin: args.admin,
        store: PathBuf::from("store"),
        results_retention: crate::config::DEFAULT_RESULTS_RETENTION.to_string(),
    };
    config.check()?;
    let advertise = if args.advertise.is_empty() {
        &args.listen
    } else {
        &args.advertise
    };
    for a in advertise {
        let addr = parse_listen(a)?;
        let unspecified = addr.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        });
        if unspecified {
            bail!("{a}: other members cannot dial an unspecified address; give --advertise with this machine's address");
        }
    }
    for file in [KEY_FILE, TOKEN_FILE, NODE_FILE, MEMBER_FILE] {
        let path = args.dir.join(file);
        if path.exists() {
            bail!(
                "{} exists: refusing to overwrite an existing member directory",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;

    let secrets = MemberSecrets::generate(&mut OsRng);
    let key_hex = Zeroizing::new(hex::encode(secrets.to_bytes().as_slice()));
    write_secret(
        &args.dir.join(KEY_FILE),
        format!("{}\n", key_hex.as_str()).as_bytes(),
    )?;
    let mut token = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(token.as_mut());
    let token_hex = Zeroizing::new(hex::encode(token.as_slice()));
    write_secret(
        &args.dir.join(TOKEN_FILE),
        format!("{}\n", token_hex.as_str()).as_bytes(),
    )?;
    write_new(&args.dir.join(NODE_FILE), &config.to_commented_toml())?;
    let entry = MemberEntry::of(&secrets, &args.name, advertise.clone());
    let member_file = args.dir.join(MEMBER_FILE);
    let text = format!(
        "# The public entry of member {:?} for the consortium genesis: give this file to\n\
         # whoever runs `bankmesh consortium assemble`. It holds no secret.\n{}",
        args.name,
        toml::to_string(&entry)?
    );
    write_new(&member_file, &text)?;
    let peer_id = peer_id_of(&secrets.identity().verifying_key().to_bytes())?.to_string();
    Ok(Initialised {
        peer_id,
        member_file,
    })
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_secrets, load_token};

    fn args(dir: &Path) -> InitArgs {
        InitArgs {
            name: "bank-a".into(),
            dir: dir.to_path_buf(),
            listen: vec!["/ip4/127.0.0.1/tcp/7001".into()],
            advertise: vec![],
            admin: "127.0.0.1:7301".parse().unwrap(),
        }
    }

    #[test]
    fn makes_a_member_directory_once() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a");
        let made = run(&args(&dir)).unwrap();
        assert!(made.peer_id.starts_with("12D3KooW"));
        let secrets = load_secrets(&dir).unwrap();
        assert_eq!(load_token(&dir).unwrap().len(), 64);
        let config = NodeConfig::load(&dir).unwrap();
        assert_eq!(config.admin.port(), 7301);
        let entry = MemberEntry::load(&made.member_file).unwrap();
        assert_eq!(
            entry.to_info(1).unwrap().identity,
            secrets.identity().verifying_key().to_bytes()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [KEY_FILE, TOKEN_FILE] {
                let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        let before = std::fs::read(dir.join(KEY_FILE)).unwrap();
        let err = run(&args(&dir)).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read(dir.join(KEY_FILE)).unwrap(), before);
    }

    #[test]
    fn rejects_bad_arguments_before_writing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a");
        let mut a = args(&dir);
        a.listen = vec!["/ip4/0.0.0.0/tcp/7001".into()];
        assert!(run(&a).unwrap_err().to_string().contains("--advertise"));
        a.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        assert!(run(&a).is_err());
        a.listen = vec!["/ip4/127.0.0.1/tcp/7001".into()];
        a.admin = "0.0.0.0:7301".parse().unwrap();
        assert!(run(&a).is_err());
        assert!(!dir.exists());
    }
}
