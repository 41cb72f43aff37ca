//! Builds the XDP object from carp-ebpf (nightly + bpf-linker, installed by `cargo xtask setup`) and
//! leaves it in OUT_DIR for `include_bytes_aligned!`.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .ok_or_else(|| anyhow::anyhow!("carp-userspace has no parent directory"))?
        .join("carp-ebpf");
    if which_bpf_linker().is_none() {
        anyhow::bail!(
            "bpf-linker is not installed, so the XDP program cannot be built. Run `cargo xtask setup` \
             (it installs LLVM 22, bpf-linker 0.13.0 and rust-src for nightly)."
        );
    }
    let package = aya_build::Package {
        name: "carp-ebpf",
        root_dir: root
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
