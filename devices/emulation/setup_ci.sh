#!/usr/bin/env bash
# Installs the system packages edgepack's emulated ARM runs need; safe to run repeatedly.
#   qemu-user-static       qemu-aarch64-static / qemu-arm-static (no binfmt needed: edgepack
#                          calls them directly with -L SYSROOT)
#   debian-archive-keyring verifies the Debian arm64/armhf package indexes
#   apt-get, dpkg-deb      already on Debian/Ubuntu; the sysroot itself is built on first use
#                          and cached under ~/.cache/edgepack/emulation
set -euo pipefail
need=()
if ! command -v qemu-aarch64-static >/dev/null && ! command -v qemu-aarch64 >/dev/null \
   || ! command -v qemu-arm-static >/dev/null && ! command -v qemu-arm >/dev/null; then
  need+=(qemu-user-static)
fi
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
qemu-aarch64-static --version 2>/dev/null | head -1 || qemu-aarch64 --version | head -1
