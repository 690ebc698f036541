#!/usr/bin/env bash
# Installs Debian's SLURM (slurm-wlm: slurmctld, slurmd and the client commands)
# for tests/test_slurm.py, unless it is there already. Idempotent and quiet.
# Where it cannot (no root, no apt-get, no package), it says so and exits 0:
# tests/test_slurm.py then skips with that reason. Starts nothing: the tests'
# fixture runs its own daemons on 127.0.0.1 (tests/slurm/local_slurm.py).
set -uo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "tests/slurm/install.sh: slurm-wlm is missing and needs root with apt-get to install; tests/test_slurm.py will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
install_slurm() { apt-get install -y -qq --no-install-recommends slurm-wlm >/tmp/slurm-install.log 2>&1; }
if ! install_slurm; then
    apt-get update -qq >/dev/null 2>&1
    if ! install_slurm; then
        echo "tests/slurm/install.sh: apt-get install slurm-wlm failed (see /tmp/slurm-install.log); tests/test_slurm.py will skip" >&2
    fi
fi
exit 0
