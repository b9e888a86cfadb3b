#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test in the workspace.
# Root-only tests run when root; with CI=true they must not skip.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# A one-shot run gains nothing from an incremental cache, which would double the target size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Integration tests run the CLI, CNI and agent binaries: build them all first.
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --test-threads=2
