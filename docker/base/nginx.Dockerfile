# nginx from Debian bookworm, laid out like the official nginx image for docker-compose.yml:
# /etc/nginx/conf.d/*.conf in the http block, logs on stdout/stderr, `nginx -g 'daemon off;'`.
ARG DEBIAN_IMAGE=handwriting-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
