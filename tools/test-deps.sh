#!/usr/bin/env bash
# Installs the system programs the test suite starts for real (no mocks): Chromium and its
# WebDriver for the browser tests, cron for the scheduler tests, Slurm with munge for
# the Slurm executor's tests (which start their own private daemons), and a desktop for
# the desktop-notification test (Xvfb, a session bus, dunst and notify-send). Idempotent: a second run
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
  [slurm-wlm]=/usr/sbin/slurmd
  [munge]=/usr/sbin/munged
  [xvfb]=/usr/bin/Xvfb
  [dbus]=/usr/bin/dbus-daemon
  [dunst]=/usr/bin/dunst
  [libnotify-bin]=/usr/bin/notify-send
)

# In containers there is no login session, so cron's PAM stack fails at pam_loginuid
# ("Cannot make/remove an entry for the specified session") and no job ever runs. Debian
# marks it `required` on some releases; `optional` lets jobs run. Idempotent: only a line
# that still says `required` is changed.
fix_cron_pam() {
  local f=/etc/pam.d/cron
  [ -f "$f" ] || return 0
  grep -qE '^session[[:space:]]+required[[:space:]]+pam_loginuid\.so' "$f" || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "pipe test deps: cron jobs fail in containers while $f requires pam_loginuid; as root run: sed -i -E 's/^(session[[:space:]]+)required([[:space:]]+pam_loginuid\.so)/\1optional\2/' $f" >&2
    return 1
  fi
  sed -i -E 's/^(session[[:space:]]+)required([[:space:]]+pam_loginuid\.so)/\1optional\2/' "$f"
  echo "pipe test deps: made pam_loginuid optional in $f (containers have no login uid)"
}

missing=()
for pkg in "${!wanted[@]}"; do
  [ -x "${wanted[$pkg]}" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  fix_cron_pam
  echo "pipe test deps: chromium, chromedriver, cron, slurm, munge, xvfb, dbus, dunst and notify-send are present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "pipe test deps: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# The tests start their own daemons (cron, a private Slurm cluster). Packages must not start
# the system's: slurmctld has no config yet, and a failed start fails the install. Docker
# images already carry this policy; elsewhere it is set for the install only.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "pipe test deps: installed ${missing[*]}"
fix_cron_pam
