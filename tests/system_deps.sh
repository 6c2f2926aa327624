#!/usr/bin/env bash
# System packages that the integration tests start for real: Chromium (browser tests of the showcase demo and
# JupyterLab) and a single-node SLURM (batch submission tests). Installs what is missing with apt-get when run as
# root; otherwise says what is missing, and those tests skip with the reason.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld slurmd slurm-client munge)
if ((${#need[@]} == 0)); then
  echo "system packages present: chromium, slurm"
  exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "not installed (needs root and apt-get): ${need[*]}; the tests that need them will be skipped"
  exit 0
fi
echo "installing: ${need[*]}"
apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || echo "apt-get could not install ${need[*]}; the tests that need them will be skipped"
exit 0
