//! The commands an injected pod runs from the Weft image:
//!
//! - `weft intercept` (the `weft-init` container): installs in the current
//!   network namespace the same interception rules `weft up` installs for
//!   its pods (`up::network`), narrowed by the flags the injector derives
//!   from `traffic.sidecar.istio.io/*`. All rules or none.
//! - `weft wait-proxy` (the classic sidecar's postStart hook with
//!   `holdApplicationUntilProxyStarts`): returns once the proxy is ready,
//!   so the kubelet starts the app containers after it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weft_kube::inject::capture::{self, Capture, PROXY_UID};

use crate::up::network;

#[derive(clap::Args, Debug)]
pub struct InterceptArgs {
    /// The sidecar's UID (and GID): its own traffic is never captured.
    #[arg(long, default_value_t = PROXY_UID)]
    proxy_uid: u32,
    /// Inbound ports redirected to the proxy: `*` or a list (Istio's `-b`).
    #[arg(long, default_value = "*")]
    include_inbound_ports: String,
    /// Inbound ports left alone (the proxy's own are always; Istio's `-d`).
    #[arg(long, default_value = "")]
    exclude_inbound_ports: String,
    /// Outbound IPv4 ranges redirected: `*` or CIDRs (Istio's `-i`).
    #[arg(long = "include-outbound-ip-ranges", default_value = "*")]
    include_outbound_ranges: String,
    /// Outbound IPv4 ranges left alone (Istio's `-x`).
    #[arg(long = "exclude-outbound-ip-ranges", default_value = "")]
    exclude_outbound_ranges: String,
    /// Outbound ports left alone (Istio's `-o`).
    #[arg(long, default_value = "")]
    exclude_outbound_ports: String,
    /// Redirect the app's DNS (UDP and TCP port 53) to the proxy's DNS
    /// server on 15053 (Istio's ISTIO_META_DNS_CAPTURE); the proxy's own
    /// lookups are left alone.
    #[arg(long)]
    capture_dns: bool,
    /// Print the rules instead of installing them.
    #[arg(long)]
    dry_run: bool,
}

impl InterceptArgs {
    fn capture(&self) -> Result<Capture, String> {
        let err = |e: capture::CaptureError| e.to_string();
        let (excluded, v6) = capture::parse_range_list(
            "--exclude-outbound-ip-ranges",
            &self.exclude_outbound_ranges,
        )
        .map_err(err)?;
        if !v6.is_empty() {
            eprintln!(
                "weft intercept: --exclude-outbound-ip-ranges: {} not captured anyway (interception is IPv4 only)",
                capture::join(&v6)
            );
        }
        Ok(Capture {
            include_inbound_ports: capture::parse_ports(
                "--include-inbound-ports",
                &self.include_inbound_ports,
            )
            .map_err(err)?,
            exclude_inbound_ports: capture::parse_port_list(
                "--exclude-inbound-ports",
                &self.exclude_inbound_ports,
            )
            .map_err(err)?,
            include_outbound_ranges: capture::parse_ranges(
                "--include-outbound-ip-ranges",
                &self.include_outbound_ranges,
            )
            .map_err(err)?,
            exclude_outbound_ranges: excluded,
            exclude_outbound_ports: capture::parse_port_list(
                "--exclude-outbound-ports",
                &self.exclude_outbound_ports,
            )
            .map_err(err)?,
            proxy_uid: self.proxy_uid,
            dns: self.capture_dns,
        })
    }
}

pub fn intercept(args: &InterceptArgs) -> ExitCode {
    let capture = match args.capture() {
        Ok(capture) => capture,
        Err(err) => {
            eprintln!("weft intercept: {err}");
            return ExitCode::from(2);
        }
    };
    let rules = capture.rules();
    if args.dry_run {
        print!("{rules}");
        return ExitCode::SUCCESS;
    }
    match network::restore_rules(&rules, None) {
        Ok(()) => {
            println!(
                "weft intercept: rules installed (inbound {} -> 15006, outbound {} -> 15001{}, UID {} exempt)",
                capture.include_inbound_ports,
                capture.include_outbound_ranges,
                if capture.dns { ", DNS 53 -> 15053" } else { "" },
                capture.proxy_uid
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "weft intercept: {err:#} (the container needs NET_ADMIN and NET_RAW, and runs as root)"
            );
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The proxy's readiness endpoint (its --health address).
    #[arg(long, default_value = "127.0.0.1:15021")]
    health: SocketAddr,
    /// Give up (exit 1, and the kubelet restarts the container) after this.
    #[arg(long, default_value = "600s")]
    timeout: humantime::Duration,
}

pub fn wait_proxy(args: &WaitArgs) -> ExitCode {
    let deadline = Instant::now() + Duration::from(args.timeout);
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match ready(args.health) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => last = "not ready".into(),
            Err(err) => last = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "weft wait-proxy: weft-proxy at {} not ready after {} ({last})",
        args.health, args.timeout
    );
    ExitCode::FAILURE
}

/// `GET /healthz/ready` answered 200.
fn ready(health: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&health, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(
        format!("GET /healthz/ready HTTP/1.1\r\nHost: {health}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
}
