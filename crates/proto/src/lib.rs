//! Messages between weftd and weft-proxy.
//!
//! - [`proxy::v1::ProxyConfig`]: the compiled, proxy-shaped config. The same
//!   messages load from a YAML or JSON file (pbjson serde impls following the
//!   proto3 JSON mapping).
//! - [`discovery::v1`]: the push stream (delta-xDS semantics) that carries
//!   those messages from weftd to each proxy, as named, versioned resources.

pub mod proxy {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/weft.proxy.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/weft.proxy.v1.serde.rs"));
    }
}

pub mod discovery {
    // A Resource's body is one proxy-config message; boxing the generated
    // oneof would only add an allocation per resource.
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/weft.discovery.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/weft.discovery.v1.serde.rs"));
    }
}

/// Envoy's rate-limit service API (the subset Weft speaks): the proxy's
/// client for global rate limits, and test servers.
pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }
    pub mod extensions {
        pub mod common {
            pub mod ratelimit {
                pub mod v3 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/envoy.extensions.common.ratelimit.v3.rs"
                    ));
                }
            }
        }
    }
    pub mod service {
        pub mod ratelimit {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.ratelimit.v3.rs"));
            }
        }
        /// External authorization (CUSTOM AuthorizationPolicies).
        pub mod auth {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.auth.v3.rs"));
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            include!(concat!(env!("OUT_DIR"), "/envoy.r#type.v3.rs"));
        }
    }
}

/// google.rpc.Status, as ext_authz answers carry it.
pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub mod encoded;
pub mod resources;
