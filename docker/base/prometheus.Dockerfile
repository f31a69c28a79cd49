# Prometheus from Debian bookworm, laid out like prom/prometheus for docker-compose.yml: the
# binary as entrypoint, /etc/prometheus/prometheus.yml, data in /prometheus, runs as nobody.
ARG DEBIAN_IMAGE=handwriting-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
