#!/usr/bin/env bash
# Installs the Debian packages the tests use as real components or data; safe to repeat.
#   mosquitto, mosquitto-clients   MQTT broker for the bridge's tests (started by fixtures)
#   openssh-server, openssh-client sshd "boards" for deploy's tests (started by fixtures)
#   docker-registry                the reference OCI distribution registry (push/pull tests)
#   espeak-ng, alsa-utils, sox     synthetic and recorded speech for the audio tests
#   libportaudio2                  PortAudio for sounddevice (listen --mic, tested on an ALSA
#                                  file-plugin capture device: no sound hardware needed)
#   fortunes, fortunes-*           real sentences in six languages for the text tests
# Services are never started here: each test fixture starts its own on 127.0.0.1.
set -euo pipefail
packages=(mosquitto mosquitto-clients openssh-server openssh-client docker-registry
          espeak-ng alsa-utils sox libportaudio2 fortunes fortunes-de fortunes-es fortunes-it fortunes-ru
          fortunes-zh)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Debian's maintainer scripts would start mosquitto/sshd/registry as system services:
  # the tests start their own, so keep the packaged ones stopped (policy-rc.d 101 = deny).
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
