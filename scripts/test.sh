#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what it needs when missing
# (Debian packages, the Rust toolchain, cargo-deny), then checks formatting, lints,
# runs every test and checks every dependency's licence.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the build and the tests use: a C compiler for the bundled SQLite,
# curl (the README tour is tested with it, and it is one of the IMAP clients of the Dovecot
# tests), python3 (XML checks, the Dovecot tests' imaplib/poplib/LMTP clients), Dovecot.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# A real Dovecot for the Dovecot source's end-to-end tests (they start their own instance
# on loopback ports, in a temporary directory).
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
[ -x /usr/lib/dovecot/pop3 ] || missing+=(dovecot-pop3d)
[ -x /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
[ -x /usr/lib/dovecot/managesieve ] || missing+=(dovecot-managesieved)
# A real headless Chromium for the web console's end-to-end tests (driven over WebDriver).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# openssl makes the throwaway certificates of the TLS tests (console, IMAP proxy, IMAPS, syslog over TLS).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# A real Postfix and swaks for the milter's end-to-end tests (they start their own Postfix
# instance with `postfix -c DIR`, on loopback ports, in a temporary directory).
[ -x /usr/sbin/postfix ] || missing+=(postfix)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
# chattr, with which the IMAP proxy test makes the store unwritable (fail closed).
command -v chattr >/dev/null 2>&1 || missing+=(e2fsprogs)
# mbsync syncs a mailbox through the IMAP proxy.
command -v mbsync >/dev/null 2>&1 || missing+=(isync)
# Cyrus, the IMAP proxy's second real upstream (cyrus-imapd itself is unpacked below).
[ -x /usr/sbin/cyrmaster ] || missing+=(cyrus-common)
command -v saslpasswd2 >/dev/null 2>&1 || missing+=(sasl2-bin)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# cyrus-imapd conflicts with dovecot-imapd (both provide imap-server): unpack its package
# instead of installing it; the tests run its imapd under cyrus-common's cyrmaster.
if [ ! -x /usr/lib/cyrus/bin/imapd ] && [ ! -x /opt/cyrus-imapd/usr/lib/cyrus/bin/imapd ]; then
  echo "unpacking cyrus-imapd into /opt/cyrus-imapd"
  deb_dir=$(mktemp -d)
  sudo_if_needed apt-get update -qq
  (cd "$deb_dir" && apt-get download -qq cyrus-imapd 2>/dev/null \
    && sudo_if_needed dpkg -x cyrus-imapd_*.deb /opt/cyrus-imapd)
  rm -rf "$deb_dir"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "installing the Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny (once)"
  cargo install --locked cargo-deny@0.20.2 2>&1 | tail -n 3
fi

echo "== cargo fmt";    cargo fmt --all -- --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test";   cargo test --workspace --locked
echo "== cargo deny";   cargo deny --log-level error check licenses
echo "all checks passed"
