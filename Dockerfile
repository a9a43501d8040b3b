# shotgrid-token-broker: production image.
#
#   docker build -t token-broker .
#   docker run -p 8000:8000 --env-file broker.env token-broker
#
# Settings come from BROKER_* variables (see the README's settings table); `serve` names
# every missing one and exits. Behind a TLS-terminating proxy set BROKER_TRUSTED_PROXIES to
# the proxy's address and BROKER_ISSUER to the public https:// URL (README, "Operating
# the broker"). TOKEN_BROKER_PORT is the port `serve` listens on and the health check
# probes.

# ---- build: a virtualenv holding the broker and its runtime dependencies only ----------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md openapi.yaml constraints.txt ./
COPY broker ./broker
COPY shotgrid_emulator ./shotgrid_emulator
# constraints.txt pins every dependency to the versions the test suite passed with: a
# later release (uvicorn's private HttpToolsProtocol, which broker/http/protocol.py
# subclasses, above all) cannot slip into a fresh build.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# ---- runtime: slim Python, the virtualenv, an unprivileged user ------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid broker --home-dir /var/lib/token-broker \
       --create-home --shell /usr/sbin/nologin broker
COPY --from=build /opt/venv /opt/venv
# DL3064 flags names containing "TOKEN": TOKEN_BROKER_PORT is the product's name plus a port.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BROKER_LOG_FORMAT=json \
    TOKEN_BROKER_PORT=8000
USER 10001:10001
WORKDIR /var/lib/token-broker
EXPOSE 8000
STOPSIGNAL SIGTERM
# No curl in slim images: the health probe is Python's urllib, on the port `serve` uses.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TOKEN_BROKER_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
CMD ["token-broker", "serve", "--host", "0.0.0.0"]
