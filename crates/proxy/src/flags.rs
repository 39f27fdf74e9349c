//! Envoy-style response flags: a short code for why a request or connection
//! did not get a normal upstream answer, shared by replies, logs and metrics.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    /// NR: no route (or service) matched the request.
    NoRoute,
    /// UH: the chosen cluster has no healthy endpoint.
    NoHealthyUpstream,
    /// UF: connecting to the upstream failed.
    UpstreamConnectFailure,
    /// UT: the upstream did not answer within the route timeout.
    UpstreamRequestTimeout,
    /// UC: the upstream connection closed before the response completed.
    UpstreamConnectionTermination,
    /// DC: the downstream client went away before the response completed.
    DownstreamDisconnect,
}

impl ResponseFlag {
    pub fn code(self) -> &'static str {
        match self {
            Self::NoRoute => "NR",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectFailure => "UF",
            Self::UpstreamRequestTimeout => "UT",
            Self::UpstreamConnectionTermination => "UC",
            Self::DownstreamDisconnect => "DC",
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
