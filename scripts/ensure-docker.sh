#!/usr/bin/env bash
# Makes sure a Docker engine and compose answer, for the compose smoke test (CI, as root):
# installs Debian's docker.io, docker-compose (v1) and debootstrap where missing, starts
# dockerd in the background where none answers (its pid in DOCKERD_PID_FILE, its log in
# DOCKERD_LOG), and adds compose v2 (scripts/install-compose-v2.sh) where it is not there.
# Exits 1, saying why, where no engine can run here (no root, no apt, a sandbox without the
# kernel features dockerd needs): the caller then skips the smoke test.
set -uo pipefail
cd "$(dirname "$0")/.."

DOCKERD_PID_FILE=${DOCKERD_PID_FILE:-/tmp/ensure-docker.dockerd.pid}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/ensure-docker.dockerd.log}

say() { echo "ensure-docker: $*" >&2; }

if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null \
    || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "no dockerd/docker-compose/debootstrap, and no root apt-get to install them"
    exit 1
  fi
  say "installing docker.io docker-compose debootstrap (Debian)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      docker.io docker-compose debootstrap >/dev/null; } || { say "apt-get failed"; exit 1; }
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $DOCKERD_LOG)"
  dockerd >"$DOCKERD_LOG" 2>&1 &
  echo $! >"$DOCKERD_PID_FILE"
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$(cat "$DOCKERD_PID_FILE")" 2>/dev/null || break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    say "dockerd did not come up; the end of its log:"
    tail -5 "$DOCKERD_LOG" >&2
    exit 1
  fi
fi

if ! docker compose version >/dev/null 2>&1; then
  bash scripts/install-compose-v2.sh || say "no compose v2; the smoke test uses v1"
fi
docker version --format 'ensure-docker: engine {{.Server.Version}}' >&2
