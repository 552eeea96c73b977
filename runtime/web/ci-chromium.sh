#!/usr/bin/env bash
# Installs what runtime/web/tests/browser needs: Debian's Chromium and its WebDriver
# (chromedriver). The tests start chromedriver themselves on an ephemeral 127.0.0.1 port.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
