#!/bin/sh
# Builds carpd and carpctl in release mode and generates what a package ships beside them: shell
# completions and man pages, both produced from the binaries' own clap definitions (hidden flags
# --generate-completions SHELL and --generate-man DIR), so they never drift from --help.
# Output: target/dist/{bin,man,completions}. Run from anywhere in the repository.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/dist"
cargo build --release -p carp-userspace --bin carpd --bin carpctl --manifest-path "$root/Cargo.toml"
rm -rf "$out" && mkdir -p "$out/bin" "$out/man" "$out/completions" "$out/systemd" "$out/etc"
for b in carpd carpctl; do
    cp "$root/target/release/$b" "$out/bin/"
    "$out/bin/$b" --generate-man "$out/man"
    "$out/bin/$b" --generate-completions bash > "$out/completions/$b.bash"
    "$out/bin/$b" --generate-completions zsh > "$out/completions/_$b"
    "$out/bin/$b" --generate-completions fish > "$out/completions/$b.fish"
done
cp "$root/packaging/carpd.service" "$out/systemd/"
cp "$root/packaging/carp.toml.example" "$out/etc/"
echo "dist: $out"
ls -R "$out"
