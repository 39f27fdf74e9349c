//! `weft analyze` lives in weft-api (so `weft` runs it without weftd);
//! weftd re-exports it for its `POST /v1/analyze` and keeps here only
//! `describe`, which needs weftd's registry.

mod describe;

pub use describe::{Target, describe, describe_in, describe_with_cluster};
pub use weft_api::analyze::*;
