//! Rate limiting's runtime, beside the compiled rules
//! (`config::ratelimit`): the token buckets a proxy's workers share
//! ([`bucket`]) and the call to a global rate-limit service speaking
//! Envoy's API ([`rls`]). The phase that applies both to a request is
//! `http::ratelimit`.

pub mod bucket;
pub mod rls;

pub use bucket::{Buckets, TokenBucket};
