#!/usr/bin/env bash
# Installs what runtime/device/tests/openssh.rs needs: a real OpenSSH server (/usr/sbin/sshd)
# and client tools (ssh, ssh-keygen). The test starts its own sshd on 127.0.0.1 with a
# temporary config; the service that the package installs is not started (and not needed).
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null && command -v ssh >/dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client
