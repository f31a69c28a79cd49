#!/usr/bin/env bash
# The compose smoke test: README's production section, run for real in containers.
#
#   scripts/compose-smoke.sh                 # needs a Docker engine and compose v2 or v1
#
# In a copy of the working tree (your own .env is never touched), under a compose project
# name of its own and a free host port:
#   build the images; load the NIST data (nist-data service); up (--scale api=2, behind the
#   proxy); upload samples, predict, retrain through the admin route to a new serving version;
#   `restart` (healthy and serving again, /metrics works); `down` (volumes kept) + `up`;
#   samples and model versions survived; a second retrain; the monitoring profile
#   (Prometheus scrapes both api replicas, Flower answers); image sizes and timings;
#   `down -v` at the end, also on failure (trap).
# Settings (environment):
#   COMPOSE       "docker compose" or "docker-compose" (default: v2 where installed, else v1)
#   NIST_SOURCE   EMNIST directory or archive (default: ../shared/data beside the repository)
#   BASE_IMAGES   official | debian | auto (default): official images where they are present
#                 or can be pulled, else scripts/build-base-images.sh
#   HEALTH_TIMEOUT seconds to wait for the stack to become healthy (default 300)
#   KEEP=1        leave the stack running at the end (no `down -v`)
# --build-only: stop after building the images (CI builds them while the tests run).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
NIST_SOURCE=${NIST_SOURCE:-$(cd "$REPO/.." && pwd)/shared/data}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-300}
BASE_IMAGES=${BASE_IMAGES:-auto}
PROJECT=hwsmoke-$(date +%s)-$$
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/compose-smoke.XXXXXX")
TIMINGS=()
STARTED=$SECONDS

say() { echo "compose-smoke: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

pick_compose() {
  if [ -n "${COMPOSE:-}" ]; then
    read -r -a C <<< "$COMPOSE"
  elif docker compose version >/dev/null 2>&1; then
    C=(docker compose)
  elif command -v docker-compose >/dev/null; then
    C=(docker-compose)
  else
    fail "neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed"
  fi
  COMPOSE_VERSION=$("${C[@]}" version --short)
  # v1 (1.x) has no `up --wait`; v2 and later (2.x, 5.x) have.
  V2=0
  [ "${COMPOSE_VERSION#v}" \< 2 ] || V2=1
  say "${C[*]} $COMPOSE_VERSION"
  C+=(-p "$PROJECT")
}

# Runs a step and records how long it took.
timed() {
  local name=$1 start=$SECONDS
  shift
  say "--- $name"
  "$@"
  TIMINGS+=("$(printf '%-44s %5ds' "$name" $((SECONDS - start)))")
}

client() { python3 "$WORKDIR/scripts/compose_smoke.py" "$URL" "$@"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

set_env() {  # KEY VALUE: replace the line of .env, or add it
  if grep -q "^$1=" .env; then
    sed -i "s|^$1=.*|$1=$2|" .env
  else
    echo "$1=$2" >> .env
  fi
}

copy_tree() {
  # What git tracks or would track (no .env, .venv, var/...): the images build from this.
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard) \
    | (cd "$REPO" && tar --null --ignore-failed-read -T - -cf -) \
    | tar -xf - -C "$WORKDIR"
}

official_images_available() {
  local image
  for image in python:3.11-slim postgres:16 redis:7 nginx:1.27 prom/prometheus:v2.53.2; do
    docker image inspect "$image" >/dev/null 2>&1 && continue
    timeout 120 docker pull -q "$image" >/dev/null 2>&1 || return 1
  done
}

choose_base_images() {
  if [ "$BASE_IMAGES" = official ] || { [ "$BASE_IMAGES" = auto ] && official_images_available; }; then
    say "base images: the official ones"
    return
  fi
  say "base images: built from Debian packages (scripts/build-base-images.sh)"
  ENV_OUT="$WORKDIR/base-images.env" bash "$REPO/scripts/build-base-images.sh" >/dev/null
  while IFS='=' read -r key value; do set_env "$key" "$value"; done < "$WORKDIR/base-images.env"
}

write_env() {
  cp .env.example .env
  set_env POSTGRES_PASSWORD "smoke-$RANDOM$RANDOM"
  set_env ADMIN_TOKEN "$ADMIN_TOKEN"
  set_env API_PORT "$API_PORT"
  set_env PROMETHEUS_PORT "$PROMETHEUS_PORT"
  set_env FLOWER_PORT "$FLOWER_PORT"
  set_env NIST_SOURCE "$NIST_SOURCE"
  set_env IMAGE_TAG smoke
  # Small and quick retrains (the same code path as production's).
  set_env API_WORKERS 2
  set_env RETRAIN_EPOCHS 1
  set_env RETRAIN_NIST_SAMPLES 2000
  set_env FULL_RETRAIN_EPOCHS 1
  set_env FULL_RETRAIN_NIST_SAMPLES 2000
  # A few rendered pictures a kind: the rendering runs, in a fraction of 300 a kind's minute.
  set_env RETRAIN_RENDERED_PER_KIND 20
  set_env FULL_RETRAIN_RENDERED_PER_KIND 20
  set_env MODEL_POLL_SECONDS 1
  # Only the admin route starts runs here: no automatic one in between.
  set_env RETRAIN_THRESHOLD 100000
}

both_replicas_answered() {
  local replicas
  replicas=$("${C[@]}" logs --no-color proxy 2>/dev/null | grep -o 'upstream=[0-9.:]*' | sort -u)
  say "proxy: answered by $(echo "$replicas" | tr '\n' ' ')"
  [ "$(echo "$replicas" | grep -c .)" -ge 2 ] || fail "the proxy used fewer than 2 api replicas"
}

on_exit() {
  local status=$?
  cd "$WORKDIR" 2>/dev/null || true
  if [ $status -ne 0 ] && [ ${#C[@]} -gt 0 ]; then
    say "failed; state and recent logs:"
    "${C[@]}" ps >&2 || true
    "${C[@]}" logs --no-color --tail=60 >&2 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: the stack stays up in $WORKDIR (project $PROJECT)"
  elif [ ${#C[@]} -gt 0 ]; then
    "${C[@]}" --profile monitoring --profile setup down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$WORKDIR"
  fi
  exit $status
}

poll_healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) unhealthy
  while true; do
    unhealthy=$(docker ps --filter "label=com.docker.compose.project=$PROJECT" \
      --format '{{.Names}} {{.Status}}' | grep -E 'health' | grep -Ev '\(healthy\)' || true)
    [ -z "$unhealthy" ] && break
    [ $SECONDS -lt $deadline ] || fail "not healthy after ${HEALTH_TIMEOUT}s: $unhealthy"
    sleep 3
  done
  client wait-ready --timeout "$HEALTH_TIMEOUT"
}

up_healthy() {
  if [ "$V2" = 1 ]; then
    "${C[@]}" "$@" up -d --wait --scale api=2
  else
    "${C[@]}" "$@" up -d --scale api=2  # compose v1 has no --wait: poll the healthchecks
  fi
  poll_healthy
}

restart_healthy() {
  "${C[@]}" restart
  poll_healthy
}

down_up() {
  "${C[@]}" down  # volumes kept
  up_healthy
}

# The api image has neither TensorFlow nor the worker's or the trainer's code (issue 13).
api_image_is_lean() {
  docker run --rm --entrypoint python handwriting-service-api:smoke -c '
import importlib.util, sys
def present(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
found = [m for m in ("tensorflow", "keras", "trainer.pipeline", "worker.tasks") if present(m)]
print("api image holds", found or "none of tensorflow, keras, trainer, worker")
sys.exit(1 if found else 0)' >&2 || fail "the api image holds training code"
}

monitoring() {
  up_healthy --profile monitoring
  python3 "$WORKDIR/scripts/compose_smoke.py" "http://127.0.0.1:$PROMETHEUS_PORT" \
    prometheus-targets --job api --expect 2 --timeout 120
  python3 "$WORKDIR/scripts/compose_smoke.py" "http://127.0.0.1:$FLOWER_PORT" \
    http-ok --path /healthcheck --timeout 120
}

expect_counts() {  # JSON from `client counts`, samples and models expected
  local found
  found=$(client counts)
  [ "$found" = "{\"models\": $2, \"samples\": $3}" ] || fail "$1: expected $2 models and $3 samples, found $found"
  say "$1: $found"
}

report() {
  say "images:"
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E '^handwriting-service-[a-z-]+:smoke |^handwriting-base/' | sort | sed 's/^/  /' >&2
  say "timings (compose $COMPOSE_VERSION, project $PROJECT):"
  printf '  %s\n' "${TIMINGS[@]}" >&2
  say "total $((SECONDS - STARTED))s"
}

main() {
  C=()
  trap on_exit EXIT
  docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info)"
  [ -e "$NIST_SOURCE" ] || fail "NIST_SOURCE $NIST_SOURCE does not exist"
  pick_compose
  copy_tree
  cd "$WORKDIR"
  API_PORT=$(free_port)
  PROMETHEUS_PORT=$(free_port)
  FLOWER_PORT=$(free_port)
  ADMIN_TOKEN=smoke-token-$RANDOM$RANDOM
  URL=http://127.0.0.1:$API_PORT
  write_env
  timed "base images" choose_base_images
  timed "build" "${C[@]}" build
  api_image_is_lean
  if [ "${1:-}" = --build-only ]; then
    report
    return
  fi
  timed "nist-data: EMNIST into the volume" "${C[@]}" run --rm nist-data
  timed "up --scale api=2, healthy" up_healthy
  timed "upload 40 samples" client upload --nist "$NIST_SOURCE" --count 40
  timed "predict 20" client predict --nist "$NIST_SOURCE" --count 20
  both_replicas_answered
  timed "retrain to a new serving version" \
    client retrain --nist "$NIST_SOURCE" --token "$ADMIN_TOKEN" --timeout 900
  client metrics
  expect_counts "before the restart" 2 40
  timed "restart, healthy" restart_healthy
  timed "predict after restart" client predict --nist "$NIST_SOURCE" --count 20
  client metrics
  timed "down (volumes kept) + up, healthy" down_up
  expect_counts "after down + up" 2 40
  timed "upload 20 more" client upload --nist "$NIST_SOURCE" --offset 40 --count 20
  timed "retrain after the restarts" \
    client retrain --nist "$NIST_SOURCE" --token "$ADMIN_TOKEN" --timeout 900
  expect_counts "at the end" 3 60
  timed "monitoring profile: Prometheus, Flower" monitoring
  report
  say "PASSED"
}

main "$@"
