#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing (needs root or sudo).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
for lib in libEGL.so.1 libGL.so.1; do
  ldconfig -p | grep -q "$lib" || need+=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)
done
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
