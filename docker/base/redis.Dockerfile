# Redis 7 from Debian bookworm, behaving like the official redis image as far as
# docker-compose.yml uses it: `redis-server ...` as the command, redis-cli for the healthcheck,
# reachable from other containers (the official image is built with protected mode off).
ARG DEBIAN_IMAGE=handwriting-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER redis
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
