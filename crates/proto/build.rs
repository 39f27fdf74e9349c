//! Compiles `proto/` with protox (pure Rust, so no `protoc` on any machine),
//! then generates prost types, tonic client/server code for the discovery
//! service, and pbjson serde impls (proto3 JSON mapping: camelCase or
//! snake_case field names, enums by name, durations as "1.5s").

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/weft/proxy/v1/config.proto",
        "proto/weft/discovery/v1/discovery.proto",
        "proto/envoy/service/ratelimit/v3/rls.proto",
        "proto/envoy/service/auth/v3/external_auth.proto",
    ];
    // The whole tree: imported files (authz.proto, ...) change the output too.
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let descriptor_bytes = descriptors.encode_to_vec();

    let mut config = prost_build::Config::new();
    config
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .btree_map(["."]);
    tonic_prost_build::configure().compile_fds_with_config(descriptors, config)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .btree_map([".weft"])
        .build(&[".weft"])?;
    Ok(())
}
