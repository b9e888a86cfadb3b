#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test in the workspace.
# Root-only tests run when root; with CI=true they must not skip.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Integration tests run the CLI, CNI and agent binaries: build them all first.
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --test-threads=2
