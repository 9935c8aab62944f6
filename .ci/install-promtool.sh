#!/usr/bin/env bash
# Make `promtool` (Prometheus rule checker / unit tester) available for
# tests/unit/test_manifests.py. Installs Debian/Ubuntu's `prometheus` package when promtool
# is missing. Never fails the build: without promtool the rule tests are skipped, loudly.
set -u

if command -v promtool >/dev/null 2>&1; then
    echo "install-promtool: $(promtool --version 2>&1 | head -n 1)"
    exit 0
fi

warn() {
    echo "############################################################################" >&2
    echo "WARNING: promtool is not installed ($1)." >&2
    echo "WARNING: the PrometheusRule checks in tests/unit/test_manifests.py will be SKIPPED." >&2
    echo "WARNING: install it by hand: apt-get install prometheus (provides /usr/bin/promtool)." >&2
    echo "############################################################################" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || warn "no apt-get on this machine"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || warn "not root and no sudo"
    SUDO="sudo -n"
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends prometheus; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    warn "apt-get install prometheus failed"
fi
rm -f "$log"

# The package also installs a Prometheus server unit; where systemd runs it (e.g. CI
# runners), stop it: only promtool is wanted.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

command -v promtool >/dev/null 2>&1 || warn "package installed but promtool not on PATH"
echo "install-promtool: installed $(promtool --version 2>&1 | head -n 1)"
