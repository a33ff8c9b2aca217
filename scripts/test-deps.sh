#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent).
set -euo pipefail
command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }
