#!/usr/bin/env bash
# Installs the system programs the test suite starts for real (no mocks): Chromium and its
# WebDriver for the browser tests, and cron for the scheduler tests. Idempotent: a second run
# checks and exits. Python tools (MLflow, Airflow, the openai client) are installed by the
# tests themselves into virtual environments in the user cache.
#
#   tools/test-deps.sh
set -euo pipefail

if [ "$(uname -s)" != "Linux" ]; then
  echo "pipe test deps: not Linux; install Chromium and chromedriver yourself for the browser tests"
  exit 0
fi

# Debian package -> a program it provides.
declare -A wanted=(
  [chromium]=/usr/bin/chromium
  [chromium-driver]=/usr/bin/chromedriver
  [cron]=/usr/sbin/cron
)

missing=()
for pkg in "${!wanted[@]}"; do
  [ -x "${wanted[$pkg]}" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "pipe test deps: chromium, chromedriver and cron are present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "pipe test deps: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "pipe test deps: installed ${missing[*]}"
