//! Generates the gRPC code from `/proto` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "oba/common/v1/common.proto",
        "oba/user/v1/user.proto",
        "oba/post/v1/post.proto",
        "oba/comment/v1/comment.proto",
        "oba/like/v1/like.proto",
        "oba/event/v1/event.proto",
        "oba/rank/v1/rank.proto",
        "oba/notification/v1/notification.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
