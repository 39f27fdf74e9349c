//! Messages between weftd and weft-proxy.
//!
//! [`proxy::v1::ProxyConfig`] is the compiled, proxy-shaped config. The types are
//! generated from `proto/` by prost, with serde impls (pbjson) following the
//! proto3 JSON mapping, so the same messages load from a YAML or JSON file.

pub mod proxy {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/weft.proxy.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/weft.proxy.v1.serde.rs"));
    }
}
