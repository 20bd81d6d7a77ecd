#!/bin/sh
# Install Debian's headless Chromium and its chromium-driver for the browser tests
# (tests/test_report_browser.py, tests/test_serve_browser.py: selenium drives it through chromedriver).
# Does nothing when Chromium is already there; needs root and apt-get (Debian/Ubuntu images).
set -eu
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: no apt-get here; the browser test will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-chromium: not root; the browser test will be skipped (run: sudo apt-get install -y chromium chromium-driver)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# A failed install is not a failed test run: the browser test then skips and says why.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null; }; then
    echo "install-chromium: apt-get could not install chromium; the browser test will be skipped" >&2
    exit 0
fi
echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
