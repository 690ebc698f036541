#!/usr/bin/env bash
# Installs Debian's HMMER (jackhmmer, nhmmer, hmmsearch, hmmbuild, hmmalign) for
# tests/test_real_af3_data_pipeline.py, unless jackhmmer is there already.
# Idempotent and quiet; runs apt-get update only when it installs. Debian's
# HMMER lacks DeepMind's --seq_limit patch: AF3 v3.0.2+ probes for it and runs
# jackhmmer without it (v3.0.0-v3.0.1 never pass it). Where it cannot install
# (no root, no apt-get, no package), it says so and exits 0: the tests then
# skip with that reason.
set -uo pipefail
if command -v jackhmmer >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "tests/data_pipeline/install.sh: HMMER is missing and needs root with apt-get to install; the data-pipeline tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log=/tmp/hmmer-install.log
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends hmmer; } >"$log" 2>&1; then
    echo "tests/data_pipeline/install.sh: apt-get install hmmer failed (see $log); the data-pipeline tests will skip" >&2
fi
exit 0
