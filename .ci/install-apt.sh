#!/usr/bin/env bash
# Make a Debian-packaged tool the tests need available: `install-apt.sh COMMAND PACKAGE`
# installs PACKAGE with apt-get when COMMAND is missing. Used by `make test` for
#   promtool  (prometheus) - Prometheus rule checks / unit tests in tests/manifests/
#   chromium  (chromium)   - the offline /docs rendering check in tests/integration/test_serving.py
#   redis-server (redis-server) - the GCS fault-tolerance test (tests/integration/test_gcs_ft.py)
# Never fails the build: without the tool those tests are skipped, loudly.
set -u
cmd=$1 pkg=$2

if command -v "$cmd" >/dev/null 2>&1; then
    echo "install-apt: $cmd: $("$cmd" --version 2>&1 | head -n 1)"
    exit 0
fi

warn() {
    echo "############################################################################" >&2
    echo "WARNING: $cmd is not installed ($1)." >&2
    echo "WARNING: the tests that need it will be SKIPPED." >&2
    echo "WARNING: install it by hand: apt-get install $pkg" >&2
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
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$pkg"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    warn "apt-get install $pkg failed"
fi
rm -f "$log"

# The prometheus package also installs a server unit; where systemd runs it (e.g. CI
# runners), stop it: only promtool is wanted.
if [ "$pkg" = prometheus ] && command -v systemctl >/dev/null 2>&1 \
    && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

command -v "$cmd" >/dev/null 2>&1 || warn "package installed but $cmd not on PATH"
echo "install-apt: installed $cmd: $("$cmd" --version 2>&1 | head -n 1)"
