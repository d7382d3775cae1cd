# Profile gateway image: `gateway serve` on port 8080 as an unprivileged user.
#
#   docker build -t profile-gateway .
#   docker run -p 8080:8080 -v gw:/data -e GATEWAY_API_TOKENS=app:<32+ character token> profile-gateway
#
# Two stages: the first installs the project and its dependencies into a
# virtualenv, the second copies only that virtualenv onto a clean slim Python,
# so no compiler, build backend, pip cache or source tree reaches the image.
# Every dependency ships binary wheels for CPython 3.11 on Linux, so the build
# stage needs no compiler either. PYTHON_IMAGE lets a builder without access to
# Docker Hub substitute an equivalent local base (see helm/README-section.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/gateway
# The metadata first, so a code-only change reuses the dependency layer. The
# `tracing` extra is in: traces are off until the OTEL_* variables ask for them.
COPY pyproject.toml README.md ./
RUN mkdir gateway && touch gateway/__init__.py \
    && /opt/gateway/bin/pip install --no-cache-dir '.[tracing]' \
    && /opt/gateway/bin/pip uninstall --yes profile-gateway
COPY gateway ./gateway
RUN /opt/gateway/bin/pip install --no-cache-dir --no-deps . \
    && /opt/gateway/bin/python -m compileall -q /opt/gateway/lib \
    && /opt/gateway/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/gateway/bin/gateway --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="profile-gateway" \
      org.opencontainers.image.description="Stores customer profiles durably and fans them out to Ocamba Hood, Omneo and import_batch"
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATABASE_URL=sqlite:////data/gateway.db
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin gateway \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/gateway /opt/gateway
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# On SIGTERM /readyz turns 503 and requests are still served for
# GATEWAY_SHUTDOWN_DELAY seconds, then open requests finish (5 s at most) and
# the dispatcher gets GATEWAY_SHUTDOWN_GRACE seconds: `docker stop -t 30`.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '8080') + '/livez', timeout=2)"]
ENTRYPOINT ["gateway"]
CMD ["serve"]
