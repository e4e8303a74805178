#!/usr/bin/env bash
# OpenViking SDK compatibility suite: drives a real Longship through the official Python client
# (openviking-sdk from PyPI) and the `ov` CLI of the openviking 0.5.2 wheel, in a venv this
# script creates.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${COMPAT_VENV:-$root/target/compat-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$here/requirements-cli.txt"
(cd "$root" && cargo build --quiet --bin longship)
export LONGSHIP_BIN="${LONGSHIP_BIN:-$root/target/debug/longship}"
exec "$venv/bin/python" -m pytest -q "$here" "$@"
