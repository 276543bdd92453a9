#!/usr/bin/env bash
# The whole test suite, services included: installs (once, cached) and starts a one-node
# replica set, a standalone mongod and a Garage S3 server on 127.0.0.1, runs every test
# against them, and stops them again. Extra arguments go to `cargo test`
# (e.g. `scripts/test.sh --test backup`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh start
trap 'bash scripts/services.sh stop' EXIT

RUN="${MONGOKEEP_RUN:-/tmp/mongokeep-services-$(id -u)}"
set -a
# shellcheck disable=SC1091
. "$RUN/env"
set +a

# Tests start private servers and run the binary many times; a few at a time suits 2 cores.
cargo test --locked "$@" -- --test-threads="${MONGOKEEP_TEST_THREADS:-4}"
