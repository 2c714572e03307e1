#!/usr/bin/env bash
# The Debian packages the tests need beyond Python: Chromium, which the browser tests drive through
# Playwright at /usr/bin/chromium (Playwright's own browser downloads are not used), and PostgreSQL
# and Redis, which the browser and distributed tests start themselves (initdb/pg_ctl and
# redis-server on loopback ports, in temporary directories: the packages' own services are not
# used). Installs only what is missing; needs root (or sudo) for apt-get.
set -euo pipefail
PACKAGES=(chromium postgresql redis-server)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
