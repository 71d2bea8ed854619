//! Regenerates `frontend/src/proto/onnx.rs` from `frontend/proto/onnx.proto`
//! with prost-build and the protoc shipped in the `protoc-bin-vendored` crate,
//! so neither this tool's users nor kiln's builds need a system `protoc`.
//!
//! Run from anywhere: `cargo run --manifest-path frontend/protogen/Cargo.toml`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frontend = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let proto_dir = frontend.join("proto");
    let out_dir = frontend.join("src").join("proto");
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let mut cfg = prost_build::Config::new();
    cfg.out_dir(&out_dir);
    cfg.compile_protos(&[proto_dir.join("onnx.proto")], &[proto_dir])?;
    println!("wrote {}", out_dir.join("onnx.rs").display());
    Ok(())
}
