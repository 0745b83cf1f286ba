//! The operator's commands that talk to a running node's admin API: `submit`, `results`,
//! `status`. They read the address from `DIR/node.toml` and the token from `DIR/admin.token`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::admin::MAX_BODY_BYTES;
use crate::config::{load_token, NodeConfig};
use crate::inputs;
use crate::peer::instant;

struct Admin {
    base: String,
    token: Zeroizing<String>,
    agent: ureq::Agent,
}

impl Admin {
    fn open(dir: &Path) -> Result<Admin> {
        let config = NodeConfig::load(dir)?;
        let token = load_token(dir)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Ok(Admin {
            base: format!("http://{}", config.admin),
            token,
            agent,
        })
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "no bankmesh node answers at {} ({e}): is `bankmesh run` running for this directory?",
            self.base
        )
    }

    /// Sends a request and returns the JSON answer, or the node's error message.
    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token.as_str());
        let response = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "text/csv")
                .send(&b[..]),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = response.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES as u64 * 4)
            .read_to_string()
            .context("reading the node's answer")?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("the node answered {status} with no JSON: {text}"))?;
        if status != 200 {
            let msg = value["error"].as_str().unwrap_or("unknown error");
            bail!("{msg}");
        }
        Ok(value)
    }
}

/// `bankmesh submit`: checks the whole file here first (file and line named), then queues it.
pub fn submit(dir: &Path, file: &Path, epoch: Option<u64>) -> Result<u64> {
    let rows = inputs::read_scores(file)?;
    if rows.is_empty() {
        bail!("{}: no scores", file.display());
    }
    let admin = Admin::open(dir)?;
    let body = std::fs::read(file)?;
    let path = match epoch {
        Some(e) => format!("/v1/submit?epoch={e}"),
        None => "/v1/submit".to_string(),
    };
    let answer = admin.call("POST", &path, Some(body))?;
    answer["epoch"]
        .as_u64()
        .ok_or_else(|| anyhow!("the node's answer names no epoch"))
}

/// `bankmesh results`: the CSV `client_id,average,count`, sorted by client id.
pub fn results(dir: &Path, epoch: u64, wait: Option<u64>, out: &mut impl Write) -> Result<()> {
    let admin = Admin::open(dir)?;
    let deadline = wait.map(|s| instant() + Duration::from_secs(s));
    let answer = loop {
        let answer = admin.call("GET", &format!("/v1/results?epoch={epoch}"), None)?;
        if let Some(f) = answer["failed"].as_str() {
            bail!("epoch {epoch} failed: {f}");
        }
        if answer["done"].as_bool() == Some(true) {
            break answer;
        }
        let phase = answer["phase"].as_str().unwrap_or("not started");
        match deadline {
            Some(d) if instant() < d => std::thread::sleep(Duration::from_millis(500)),
            Some(_) => bail!("epoch {epoch} has no results after waiting (phase: {phase})"),
            None => bail!("epoch {epoch} has no results yet (phase: {phase}); use --wait SECONDS"),
        }
    };
    let mut rows: Vec<(String, String, u64)> = answer["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["client_id"].as_str().unwrap_or_default().to_string(),
                        r["average"].as_str().unwrap_or_default().to_string(),
                        r["count"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["client_id", "average", "count"])?;
    for (id, avg, count) in rows {
        w.write_record([id, avg, count.to_string()])?;
    }
    w.flush()?;
    Ok(())
}

/// `bankmesh status`: a summary, or the API's JSON with `--json`.
pub fn status(dir: &Path, as_json: bool) -> Result<String> {
    let admin = Admin::open(dir)?;
    let s = admin.call("GET", "/v1/status", None)?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&s)?);
    }
    let mut out = format!(
        "member:    {} {}\nconsortium: {}\nready:     {} (caught up: {}, keys: {}, peers {}/{})\nepoch:     {} ({}); next submissions go to epoch {}\n",
        s["member"],
        s["name"].as_str().unwrap_or_default(),
        s["consortium"].as_str().unwrap_or_default(),
        s["ready"],
        s["caught_up"],
        s["keys_ready"],
        s["peers"].as_array().map_or(0, Vec::len),
        s["members"].as_u64().unwrap_or(1).saturating_sub(1),
        s["epoch"],
        s["phase"].as_str().unwrap_or_default(),
        s["submit_epoch"],
    );
    if let Some(f) = s["setup"]["failed"].as_str() {
        out.push_str(&format!("setup failed: {f}\n"));
    }
    for e in s["epochs"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  epoch {:>4}: {:<8} submissions {:>7}, ours {:>6}, results {:>6}{}\n",
            e["epoch"],
            e["phase"].as_str().unwrap_or_default(),
            e["submissions"],
            e["mine"],
            e["results"],
            e["failed"]
                .as_str()
                .map(|f| format!(", failed: {f}"))
                .unwrap_or_default()
        ));
    }
    for c in s["convictions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  the log proves member {} at fault: {} in epoch {}\n",
            c["member"],
            c["kind"].as_str().unwrap_or_default(),
            c["epoch"]
        ));
    }
    Ok(out)
}
