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
    /// DI: the request was delayed by fault injection.
    DelayInjected,
    /// FI: the request was aborted by fault injection.
    FaultInjected,
    /// URX: every try allowed by the retry policy failed.
    UpstreamRetryLimitExceeded,
    /// UO: a cluster's connection-pool limit (circuit breaker) refused the
    /// request or connection.
    UpstreamOverflow,
    /// DPE: the downstream request could not be used (a path that cannot
    /// be normalized).
    DownstreamProtocolError,
    /// RL: a rate limit (local token bucket or the global service) refused
    /// the request.
    RateLimited,
    /// RLSE: the global rate-limit service failed and failureModeDeny
    /// refused the request.
    RateLimitServiceError,
    /// UAEX: the external authorizer (a CUSTOM AuthorizationPolicy's
    /// provider) denied the request, or failed without failOpen.
    UnauthorizedExternalService,
}

const ALL: [ResponseFlag; 14] = [
    ResponseFlag::NoRoute,
    ResponseFlag::NoHealthyUpstream,
    ResponseFlag::UpstreamConnectFailure,
    ResponseFlag::UpstreamRequestTimeout,
    ResponseFlag::UpstreamConnectionTermination,
    ResponseFlag::DownstreamDisconnect,
    ResponseFlag::DelayInjected,
    ResponseFlag::FaultInjected,
    ResponseFlag::UpstreamRetryLimitExceeded,
    ResponseFlag::UpstreamOverflow,
    ResponseFlag::DownstreamProtocolError,
    ResponseFlag::RateLimited,
    ResponseFlag::RateLimitServiceError,
    ResponseFlag::UnauthorizedExternalService,
];

impl ResponseFlag {
    pub fn code(self) -> &'static str {
        match self {
            Self::NoRoute => "NR",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectFailure => "UF",
            Self::UpstreamRequestTimeout => "UT",
            Self::UpstreamConnectionTermination => "UC",
            Self::DownstreamDisconnect => "DC",
            Self::DelayInjected => "DI",
            Self::FaultInjected => "FI",
            Self::UpstreamRetryLimitExceeded => "URX",
            Self::UpstreamOverflow => "UO",
            Self::DownstreamProtocolError => "DPE",
            Self::RateLimited => "RL",
            Self::RateLimitServiceError => "RLSE",
            Self::UnauthorizedExternalService => "UAEX",
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Several flags at once (Envoy shows e.g. `UF,URX`), in [`ResponseFlag`]
/// declaration order so the same set always prints the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    pub fn with(self, flag: ResponseFlag) -> Self {
        Self(self.0 | Self::bit(flag))
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & Self::bit(flag) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Comma-separated codes, `-` for none (Envoy's access log form).
    pub fn codes(self) -> String {
        if self.is_empty() {
            return "-".to_string();
        }
        ALL.iter()
            .filter(|f| self.contains(**f))
            .map(|f| f.code())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn bit(flag: ResponseFlag) -> u16 {
        1 << (ALL.iter().position(|f| *f == flag).unwrap_or(0) as u16)
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        Self::default().with(flag)
    }
}

impl From<Option<ResponseFlag>> for ResponseFlags {
    fn from(flag: Option<ResponseFlag>) -> Self {
        flag.map(Self::from).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_sets_print_in_a_fixed_order() {
        let flags = ResponseFlags::from(ResponseFlag::UpstreamRetryLimitExceeded)
            .with(ResponseFlag::UpstreamConnectFailure);
        assert_eq!(flags.codes(), "UF,URX");
        assert_eq!(ResponseFlags::default().codes(), "-");
    }
}
