#!/usr/bin/env bash
# Installs compose v2 (`docker compose`) from Debian's own package where the host's Debian
# (bookworm) has only v1: the docker-compose package of Debian 13 (trixie, compose 2.26; it
# needs glibc >= 2.34, bookworm has 2.36). Only its plugin binary is unpacked, into
# /usr/local/lib/docker/cli-plugins; no trixie source is added to the system's apt and the v1
# `docker-compose` command stays as it is. Needs root and Debian's mirror (DEBIAN_MIRROR).
set -euo pipefail

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if docker compose version >/dev/null 2>&1; then
  docker compose version
  exit 0
fi
echo "deb $DEBIAN_MIRROR trixie main" >"$WORK/sources.list"
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial"
# A private apt state: the system's sources, lists and cache are left alone.
apt_options=(
  -o "Dir::Etc::SourceList=$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache"
  -o APT::Sandbox::User=root
)
apt-get "${apt_options[@]}" update -qq
(cd "$WORK" && apt-get "${apt_options[@]}" download -qq docker-compose)
dpkg-deb -x "$WORK"/docker-compose_*.deb "$WORK/root"
mkdir -p "$PLUGIN_DIR"
install -m 0755 "$WORK/root/usr/libexec/docker/cli-plugins/docker-compose" \
  "$PLUGIN_DIR/docker-compose"
docker compose version
