//! `security.istio.io` kinds.

pub mod authorization_policy;
pub mod peer_authentication;
pub mod request_authentication;
pub mod target_ref;

pub use authorization_policy::AuthorizationPolicy;
pub use peer_authentication::PeerAuthentication;
pub use request_authentication::RequestAuthentication;
pub use target_ref::PolicyTargetReference;
