#!/usr/bin/env bash
# Refreshes the console's screenshots in docs/console/ (login, nodes, quarantine, conflicts,
# releases, record trace, audit):
# runs the console's browser test in headless Chromium with TIERSYNC_CONSOLE_SCREENSHOTS set.
# Needs Debian's chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/console
swift build --build-tests
TIERSYNC_CONSOLE_SCREENSHOTS="$PWD/docs/console" TIERSYNC_TEST_REQUIRE_BROWSER=1 \
  swift test --skip-build --filter 'ConsoleBrowserTests/console\(\)'
ls -l docs/console
