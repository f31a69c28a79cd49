#!/bin/sh
# Debian's redis-server keeps protected mode on without a config file; the official image is
# built with it off, so that other containers of the network may connect.
set -eu
if [ "${1:-}" = redis-server ]; then
  exec "$@" --protected-mode no
fi
exec "$@"
