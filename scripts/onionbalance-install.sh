#!/usr/bin/env bash
# Install Onionbalance (the v3 onion-service load balancer, from PyPI) into a virtualenv of its
# own, for tests/onionbalance.rs and `scripts/tornet.sh ob`. Idempotent. Prints the virtualenv's
# bin directory (what ONIONBALANCE_BIN points the tests at; this default is where they look).
#
# Usage: scripts/onionbalance-install.sh [VENV_DIR]   (default ~/.cache/rdv/onionbalance-0.2.4)
set -euo pipefail
VERSION=0.2.4
venv=${1:-${HOME:-/root}/.cache/rdv/onionbalance-$VERSION}
if [[ ! -x $venv/bin/onionbalance || ! -x $venv/bin/onionbalance-config ]]; then
    python=$(command -v python3) || { echo "onionbalance-install.sh: python3 is needed" >&2; exit 1; }
    "$python" -m venv "$venv" || {
        echo "onionbalance-install.sh: $python cannot make a virtualenv (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "onionbalance==$VERSION"
fi
echo "$venv/bin"
