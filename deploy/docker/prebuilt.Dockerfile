# fourm-coordinator image from binaries built on the host (deploy/images.sh makes the context:
# a folder with `fourm-coordinator` and `fourm`). The same runtime stage as
# coordinator.Dockerfile, without the build stage.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# ca-certificates (TLS to object stores) and curl (the HEALTHCHECK) are in the local debootstrap
# base already; a registry's bookworm-slim needs them installed.
RUN if ! command -v curl >/dev/null || [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ca-certificates curl \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid 65532 fourm \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fourm
COPY fourm-coordinator fourm /usr/local/bin/
USER 65532:65532
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/status"]
ENTRYPOINT ["/usr/local/bin/fourm-coordinator"]
