//! The proxy's defences at the edge of every connection and request, as
//! plain data compiled from the config: path normalization, trusted
//! proxies in front of a gateway, handshake and header-read deadlines, and
//! the per-listener connection limit.

use std::time::Duration;

use weft_proto::proxy::v1 as pb;

use super::snapshot::{Problems, duration};

/// A TLS handshake the proxy terminates must finish within this.
const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1 request head must arrive within this (hyper's own default).
const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one listener holds at once unless the config says otherwise.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Istio's `pathNormalization` modes (see [`crate::http::normalize`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl From<pb::PathNormalization> for PathNormalization {
    fn from(mode: pb::PathNormalization) -> Self {
        match mode {
            pb::PathNormalization::Unspecified | pb::PathNormalization::Base => Self::Base,
            pb::PathNormalization::MergeSlashes => Self::MergeSlashes,
            pb::PathNormalization::DecodeAndMergeSlashes => Self::DecodeAndMergeSlashes,
            pb::PathNormalization::None => Self::None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Hardening {
    pub path_normalization: PathNormalization,
    /// Proxies in front of a gateway that append to X-Forwarded-For.
    pub num_trusted_proxies: usize,
    pub tls_handshake_timeout: Duration,
    pub request_header_timeout: Duration,
    pub max_connections_per_listener: usize,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            path_normalization: PathNormalization::Base,
            num_trusted_proxies: 0,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            request_header_timeout: DEFAULT_REQUEST_HEADER_TIMEOUT,
            max_connections_per_listener: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Hardening {
    pub(super) fn compile(config: &pb::ProxyConfig, problems: &mut Problems) -> Self {
        let defaults = Self::default();
        let positive = |value: Option<&pbjson_types::Duration>,
                        path: &str,
                        problems: &mut Problems,
                        default: Duration| {
            match duration(value, path, problems) {
                Some(zero) if zero.is_zero() => {
                    problems.push(path, "must be more than zero");
                    default
                }
                Some(set) => set,
                None => default,
            }
        };
        let path_normalization = match pb::PathNormalization::try_from(config.path_normalization) {
            Ok(mode) => mode.into(),
            Err(_) => {
                problems.push(
                    "pathNormalization",
                    format!("unknown mode {}", config.path_normalization),
                );
                defaults.path_normalization
            }
        };
        Self {
            path_normalization,
            num_trusted_proxies: config.num_trusted_proxies as usize,
            tls_handshake_timeout: positive(
                config.tls_handshake_timeout.as_ref(),
                "tlsHandshakeTimeout",
                problems,
                defaults.tls_handshake_timeout,
            ),
            request_header_timeout: positive(
                config.request_header_timeout.as_ref(),
                "requestHeaderTimeout",
                problems,
                defaults.request_header_timeout,
            ),
            max_connections_per_listener: match config.max_connections_per_listener {
                0 => defaults.max_connections_per_listener,
                limit => limit as usize,
            },
        }
    }
}
