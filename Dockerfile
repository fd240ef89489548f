# xcheck daemon in a container: metrics on :9478 (/metrics, /probe, /healthz, /report, /).
#
#   docker build -t xcheck .       (or buildah bud --format docker: an OCI image has no HEALTHCHECK)
#   docker run -d -p 9478:9478 -v /etc/xcheck:/etc/xcheck:ro xcheck --config /etc/xcheck/xcheck.toml
#   podman run -d --cap-add NET_RAW -p 9478:9478 xcheck --stun stun.example.net --gateway vpngw.example.net
#
# Arguments after the image are `xcheck daemon` flags; --listen is set here and overrides the
# config's [daemon] listen. The daemon runs as uid 9478, listens above 1024, writes nothing to disk.
# NET_RAW is the only capability to add, and only two checks use it: the ESP probe sends IP protocol
# 50 on a raw socket, and path_mtu falls back to a raw ICMP socket where ping sockets are closed to
# the user's group (net.ipv4.ping_group_range: Docker opens them to every group, podman does not).
# Without it those two report skipped (not_permitted) and the rest runs. podman hands an added
# capability to a non-root user; Docker and Kubernetes give a non-root user none (no ambient
# capabilities), so there ESP needs `--user 0 --cap-drop ALL --cap-add NET_RAW`: uid 0 with that one
# capability. ESP is measured against xcheck responder only (a VPN gateway answers ESP inside an SA).
ARG BASE_IMAGE=debian:bookworm-slim

# Build stage: pip and its wheels stay here; only the virtual environment moves on.
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY agent /src/agent
COPY checks /src/checks
# Every dependency ships a wheel for Debian's Python (3.11): no compiler is needed, none installed.
# Where HTTPS to the package index passes an intercepting proxy, hand in the CA bundle that trusts it
# as a build secret (used here, kept nowhere): --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python3 -m venv /opt/xcheck \
    && /opt/xcheck/bin/pip install --no-cache-dir --disable-pip-version-check /src \
    && /opt/xcheck/bin/pip uninstall -y --disable-pip-version-check pip setuptools

FROM ${BASE_IMAGE}
# The venv's python is a link to the base image's interpreter: same base, same Python.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 9478 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin xcheck
COPY --from=build /opt/xcheck /opt/xcheck
# Numeric, so that a runtime can tell it is not root without reading /etc/passwd (runAsNonRoot).
USER 9478:9478
EXPOSE 9478
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/xcheck/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9478/healthz', timeout=4)"]
ENTRYPOINT ["/opt/xcheck/bin/xcheck", "daemon", "--listen", "0.0.0.0:9478"]
