//! Compiles `keyhaven/v1/*.proto` with protox (pure Rust), so building needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["keyhaven/v1/keyhaven.proto"];
    println!("cargo:rerun-if-changed=keyhaven");
    let fds = protox::compile(protos, ["."])?;
    // The encoded descriptors, for gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("keyhaven_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Attribute maps in name order: stable output and encoding.
        .btree_map(".")
        // These messages carry secret bytes: their Debug impls are written by
        // hand in `lib.rs` and print the secret as redacted.
        .skip_debug([
            ".keyhaven.v1.StoreRequest",
            ".keyhaven.v1.ExportedCredential",
            ".keyhaven.v1.RestoreChunk",
        ])
        // Written by hand (`retrieve_response.rs`): the daemon sends the
        // metadata of a Retrieve as bytes it encoded once.
        // And `retrieve_request.rs`: the daemon reads a Retrieve's key where
        // it lies in the request.
        .extern_path(
            ".keyhaven.v1.RetrieveRequest",
            "crate::retrieve_request::RetrieveRequest",
        )
        .extern_path(
            ".keyhaven.v1.RetrieveResponse",
            "crate::retrieve_response::RetrieveResponse",
        )
        .compile_fds(fds)?;
    Ok(())
}
