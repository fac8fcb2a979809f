#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing (needs root or sudo):
# chromium for the browser tests (driven by Python playwright, no browser download) and the Mesa
# EGL/GL libraries VTK renders offscreen with (obmd web, trame-slicer views); poppler-utils (pdftotext,
# pdftoppm) to read the PDF report back in its tests; Orthanc with its DICOMweb plugin (the PACS round-trip
# test) and dicom3tools (dciodvfy checks every DICOM object we write).
set -euo pipefail
packages=(chromium libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 poppler-utils orthanc orthanc-dicomweb dicom3tools)
need=()
for pkg in "${packages[@]}"; do
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  fi
done
if ! command -v dpkg-query >/dev/null 2>&1; then
  command -v chromium >/dev/null 2>&1 || { echo "system-deps: not a Debian system; install chromium and Mesa EGL yourself" >&2; exit 0; }
fi
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "system-deps: installing ${need[*]}"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
