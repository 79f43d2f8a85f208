#!/usr/bin/env bash
# Install `prometheus` and `promtool` from Debian's prometheus package, once.
#
# Idempotent: does nothing when both are on PATH. Needs root (CI and the dev machines run
# as root); otherwise it says what to run. The package's own service must not start: the
# dev stack runs its own Prometheus on 127.0.0.1 (stack.prometheus_port), never the
# package's on 9090. A policy-rc.d that denies every start is put in place for the
# install when the machine has none, and the service is disabled afterwards.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "prometheus/promtool missing: run 'sudo apt-get install --no-install-recommends prometheus'" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -q
fi
apt-get install -y -q --no-install-recommends prometheus

# Leave the package's service disabled, whatever the init system.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
update-rc.d prometheus disable >/dev/null 2>&1 || true

prometheus --version | head -n 1
promtool --version | head -n 1
