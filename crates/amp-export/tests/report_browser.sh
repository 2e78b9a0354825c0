#!/usr/bin/env bash
# Browser check of the HTML report: renders a 16-GPU and a 256-GPU report in
# headless Chromium and fails on any console message, a missing drawing in
# the browser's DOM, or a blank screenshot. Needs chromium
# (apt-get install -y chromium) or AMP_CHROMIUM=/path/to/chrome.
# AMP_KEEP_REPORT=1 keeps the pages and screenshots (path printed).
set -euo pipefail
cd "$(dirname "$0")/../../.."
AMP_REQUIRE_BROWSER=1 exec cargo test -p amp-export --test report_browser -- --nocapture "$@"
