#!/usr/bin/env bash
# Install Debian's `prometheus` package (gives `prometheus` and `promtool`) for the metrics
# tests. Idempotent: does nothing when promtool is already on PATH. Starts no server
# (the package's service is not started in containers without systemd; the tests start
# their own Prometheus on a free loopback port).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq prometheus >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq prometheus >/dev/null
fi
command -v promtool >/dev/null && command -v prometheus >/dev/null
promtool --version 2>&1 | head -1
