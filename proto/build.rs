//! Compiles `keel/*.proto` with the protoc shipped inside the `protoc-bin-vendored`
//! crate, so a fresh machine needs no protoc install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=keel");
    // Entries and batches are `Bytes`: they pass through without copies.
    tonic_build::configure()
        .bytes([
            ".keel.wal.v1.AppendRequest.entries",
            ".keel.wal.v1.ReadReply.entries",
            ".keel.wal.v1.StreamBatch.batch",
        ])
        .compile_protos(&["keel/controller.proto", "keel/wal.proto"], &["."])?;
    Ok(())
}
