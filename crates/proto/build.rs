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
    write_method_paths(&fds)?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

/// Writes `METHODS`: the path of every gRPC method the contracts define, the closed set that
/// metric labels are taken from.
fn write_method_paths(fds: &prost_types::FileDescriptorSet) -> std::io::Result<()> {
    let mut paths = Vec::new();
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths.sort();
    let body: String = paths.iter().map(|p| format!("    {p:?},\n")).collect();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?);
    std::fs::write(
        out.join("methods.rs"),
        format!("pub const METHODS: &[&str] = &[\n{body}];\n"),
    )
}
