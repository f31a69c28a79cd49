#!/usr/bin/env bash
# Builds the compose stack's base images from Debian bookworm packages, for hosts that cannot
# pull from an image registry (air-gapped, a registry outage). Needs root, debootstrap, a
# Docker engine and Debian's package mirror (DEBIAN_MIRROR).
#
#   sudo scripts/build-base-images.sh            # then add the printed lines to .env
#
# 1. debootstrap a minimal bookworm (its packages cached as a tarball in BASE_IMAGE_CACHE) and
#    `docker import` it as handwriting-base/debian:bookworm;
# 2. build on it, from docker/base/*.Dockerfile (apt-get inside, docker's layer cache):
#      handwriting-base/python:3.11-bookworm    instead of python:3.11-slim   (PYTHON_IMAGE)
#      handwriting-base/postgres:15-bookworm    instead of postgres:16        (POSTGRES_IMAGE)
#      handwriting-base/redis:7-bookworm        instead of redis:7            (REDIS_IMAGE)
#      handwriting-base/nginx:bookworm          instead of nginx:1.27         (NGINX_IMAGE)
#      handwriting-base/prometheus:bookworm     instead of prom/prometheus    (PROMETHEUS_IMAGE)
# 3. print the .env lines that make docker-compose.yml use them (also written to ENV_OUT if set).
# Postgres is Debian bookworm's 15 (the official default is 16): a data volume is tied to its
# major version, so keep one POSTGRES_IMAGE per volume.
#
# A second run reuses the tarball and the layers: seconds. REBUILD=1 starts from debootstrap
# again (new Debian security updates). EXTRA_CA_DIR (default /usr/local/share/ca-certificates)
# holds *.crt authorities that the Python image trusts besides Debian's (a TLS-inspecting
# proxy between the build and PyPI); EXTRA_CA_DIR= for none.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE_CACHE=${BASE_IMAGE_CACHE:-/var/cache/handwriting-base-images}
EXTRA_CA_DIR=${EXTRA_CA_DIR-/usr/local/share/ca-certificates}
DEBIAN_IMAGE=handwriting-base/debian:$SUITE
REBUILD=${REBUILD:-0}

log() { echo "build-base-images: $*" >&2; }

need() {
  command -v "$1" >/dev/null || { log "$1 is missing ($2)"; exit 1; }
}

import_debian() {
  if [ "$REBUILD" != 1 ] && docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
    log "$DEBIAN_IMAGE is there (REBUILD=1 to make it again)"
    return
  fi
  need debootstrap "apt-get install debootstrap"
  mkdir -p "$BASE_IMAGE_CACHE"
  local tarball="$BASE_IMAGE_CACHE/$SUITE-minbase.tgz" rootfs
  if [ "$REBUILD" = 1 ] || [ ! -s "$tarball" ]; then
    log "downloading the $SUITE packages into $tarball"
    local work
    work=$(mktemp -d)
    debootstrap --variant=minbase --make-tarball="$tarball.partial" "$SUITE" "$work" \
      "$DEBIAN_MIRROR" >&2
    rm -rf "$work"
    mv "$tarball.partial" "$tarball"
  fi
  rootfs=$(mktemp -d)
  log "unpacking $SUITE into $rootfs"
  debootstrap --variant=minbase --unpack-tarball="$(realpath "$tarball")" "$SUITE" "$rootfs" \
    "$DEBIAN_MIRROR" >&2
  cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} $SUITE-security main
EOF
  # Like Debian's own images: no package cache, no recommends, no man pages.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    > "$rootfs/etc/apt/apt.conf.d/90container"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "importing $DEBIAN_IMAGE"
  tar -C "$rootfs" --numeric-owner -c . \
    | docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

build_image() {
  local tag=$1 dockerfile=$2 context=$3
  log "building $tag"
  docker build --quiet --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$tag" \
    -f "$context/$dockerfile" "$context" >/dev/null
}

main() {
  need docker "apt-get install docker.io"
  import_debian
  # A build context of its own: docker/base plus the extra authorities (maybe none).
  local context
  context=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$context'" EXIT
  cp docker/base/* "$context/"
  mkdir -p "$context/ca-certificates"
  if [ -n "$EXTRA_CA_DIR" ] && compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
    cp "$EXTRA_CA_DIR"/*.crt "$context/ca-certificates/"
  fi
  build_image handwriting-base/python:3.11-$SUITE python.Dockerfile "$context"
  build_image handwriting-base/postgres:15-$SUITE postgres.Dockerfile "$context"
  build_image handwriting-base/redis:7-$SUITE redis.Dockerfile "$context"
  build_image handwriting-base/nginx:$SUITE nginx.Dockerfile "$context"
  build_image handwriting-base/prometheus:$SUITE prometheus.Dockerfile "$context"
  local lines
  lines=$(cat <<EOF
PYTHON_IMAGE=handwriting-base/python:3.11-$SUITE
POSTGRES_IMAGE=handwriting-base/postgres:15-$SUITE
REDIS_IMAGE=handwriting-base/redis:7-$SUITE
NGINX_IMAGE=handwriting-base/nginx:$SUITE
PROMETHEUS_IMAGE=handwriting-base/prometheus:$SUITE
EOF
)
  if [ -n "${ENV_OUT:-}" ]; then
    echo "$lines" > "$ENV_OUT"
  fi
  echo "$lines"
}

main "$@"
