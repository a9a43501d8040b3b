# shotgrid-token-broker: production image.
#
#   docker build -t token-broker .
#   docker run -p 8000:8000 --env-file broker.env token-broker
#
# Settings come from BROKER_* variables (see the README's settings table); `serve` names
# every missing one and exits. Behind a TLS-terminating proxy set FORWARDED_ALLOW_IPS to
# the proxy's address and BROKER_ISSUER to the public https:// URL (README, "Operating
# the broker").

# ---- build: a virtualenv holding the broker and its runtime dependencies only ----------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md openapi.yaml ./
COPY broker ./broker
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# ---- runtime: slim Python, the virtualenv, an unprivileged user ------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid broker --home-dir /var/lib/token-broker \
       --create-home --shell /usr/sbin/nologin broker
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BROKER_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/token-broker
EXPOSE 8000
STOPSIGNAL SIGTERM
# No curl in slim images: the health probe is Python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
CMD ["token-broker", "serve", "--host", "0.0.0.0"]
