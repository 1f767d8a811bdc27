#!/usr/bin/env bash
# The browser the tests render the run report in (tests/test_pipeline_e2e.py's run-report test,
# through tests/browser.py, which also calls this script when Chromium is missing): Debian's
# Chromium, installed when missing. `make test` runs this after scripts/setup.sh; `make run`
# does not need it. BERTQA_CHROMIUM names another Chromium binary instead.
set -euo pipefail
chromium="${BERTQA_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Chromium (the run-report browser test renders the report in it)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
else
  echo "setup: the run-report test needs Chromium; install it with: sudo apt-get install -y chromium" \
       "(or set BERTQA_CHROMIUM to a Chromium binary)" >&2
  exit 1
fi
