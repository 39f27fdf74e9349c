//! weftd, Weft's control plane. So far: the config store.

pub mod store;
