//! `weft token create|list|revoke`: bootstrap tokens for proxies outside
//! Kubernetes (weftd's `/v1/tokens`). A token admits one proxy into one
//! WorkloadGroup (and, with `--address`, only from that address); it is
//! printed once, at creation, and never shown again.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::bail;
use http::StatusCode;
use weft_api::wire::{self, TokenList, TokenMinted, TokenRequest};

use crate::client::Weftd;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Mint a token for a WorkloadGroup (which must be applied first); the
    /// token is printed on stdout, its id and expiry on stderr.
    Create {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The WorkloadGroup the token admits a proxy into.
        #[arg(long, value_name = "NAME")]
        group: String,
        /// The only address a proxy may use the token from.
        #[arg(long, value_name = "IP")]
        address: Option<IpAddr>,
        /// Lifetime ("10m", "1h", "7d"; at most 30 days). Default 1h.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List unexpired tokens (their ids, never the tokens).
    List,
    /// Revoke one token by id; the others stay valid.
    Revoke { id: String },
}

pub fn run(weftd: &Weftd, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create {
            namespace,
            group,
            address,
            ttl,
        } => {
            let body = wire::to_value(&TokenRequest {
                namespace: namespace.clone(),
                workload_group: group.clone(),
                address: *address,
                ttl: ttl.clone(),
            });
            let answer = weftd.post("/v1/tokens", body.to_string(), "weft token create")?;
            if answer.status != StatusCode::OK {
                bail!("weftd: {}", answer.error());
            }
            let minted: TokenMinted = answer.decode("weftd's minted token")?;
            println!("{}", minted.token);
            eprintln!(
                "token {} for {} (WorkloadGroup {namespace}/{group}), expires {}",
                minted.id,
                minted.identity,
                when(minted.expires)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            let answer = weftd.get("/v1/tokens")?;
            if answer.status != StatusCode::OK {
                bail!("weftd: {}", answer.error());
            }
            let TokenList { tokens } = answer.decode("weftd's token list")?;
            let rows: Vec<[String; 7]> = tokens
                .into_iter()
                .map(|token| {
                    [
                        token.id,
                        format!("{}/{}", token.namespace, token.workload_group),
                        token.service_account,
                        token.address.map_or("-".into(), |a| a.to_string()),
                        when(token.expires),
                        if token.revoked { "revoked" } else { "valid" }.into(),
                        token.minted_by,
                    ]
                })
                .collect();
            let header = [
                "ID",
                "GROUP",
                "SA",
                "ADDRESS",
                "EXPIRES",
                "STATE",
                "MINTED BY",
            ];
            let table: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
                .chain(rows.into_iter().map(Vec::from))
                .collect();
            for line in crate::get::format_rows(&table) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke { id } => {
            let answer = weftd.delete(&format!("/v1/tokens/{id}"))?;
            match answer.status {
                StatusCode::OK => {
                    println!("token {id} revoked");
                    Ok(ExitCode::SUCCESS)
                }
                StatusCode::NOT_FOUND => {
                    eprintln!("weft token revoke: {}", answer.error());
                    Ok(ExitCode::FAILURE)
                }
                _ => bail!("weftd: {}", answer.error()),
            }
        }
    }
}

/// Seconds since the epoch as an RFC 3339 UTC time.
fn when(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}
