# Python 3.11 from Debian bookworm, laid out like python:3.11-slim for the Dockerfile: `python`
# and `pip` on PATH (a venv at /usr/local/python, so pip installs without
# --break-system-packages), `groupadd`/`useradd` present.
ARG DEBIAN_IMAGE=handwriting-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
# Extra certificate authorities (a TLS-inspecting proxy's) that pip must trust; may be empty.
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && update-ca-certificates \
 && python3 -m venv /usr/local/python \
 && /usr/local/python/bin/python -m pip --version
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
