#!/usr/bin/env bash
# Runs mailaudit on a fresh Debian machine: installs the build tools when missing, builds a
# release binary and starts it with its embedded store. Arguments go to `mailaudit`;
# without any, it serves a demo data directory on http://127.0.0.1:8400.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v cc >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential curl
fi
if ! command -v cargo >/dev/null 2>&1; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
cargo build --release --locked -p mailaudit
if [ $# -eq 0 ]; then
  set -- --data-dir ./mailaudit-data serve --demo
fi
exec ./target/release/mailaudit "$@"
