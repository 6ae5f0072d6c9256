//! Compiles `proto/dialer.proto` with protox (no protoc needed) and generates the tonic
//! client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dialer.proto");
    let fds = protox::compile(["proto/dialer.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
