# syntax=docker/dockerfile:1.7
# Worker image: runtime path only (no torch, no compilers), non-root, health-checked.
#
#   docker build -t product-categorizer:dev .                                   # bundle mounted at run time
#   docker build -t product-categorizer:dev --build-arg BUNDLE_DIR=models/default .   # bundle baked in
#
# See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: resolve and install the runtime dependencies into a relocatable venv -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers stay in this stage: only needed if a dependency ever falls back to an sdist.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Runtime dependencies first, read from [project].dependencies only: the `build` (torch,
# transformers, onnx, scikit-learn) and `dev` extras never get in. Cached while only code changes.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/runtime-requirements.txt \
 && pip install --upgrade pip \
 && pip install --no-compile -r /tmp/runtime-requirements.txt
COPY stream_app ./stream_app
RUN pip install --no-compile --no-deps . \
 && pip check \
 && python -c "import importlib.util as u, sys; leaked = [m for m in ('torch', 'transformers', 'sklearn', 'export', 'pytest') if u.find_spec(m)]; sys.exit(f'build-time packages in the runtime venv: {leaked}' if leaked else 0)"

# ---- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Directory (relative to the build context) baked in as /models/default. The default is an empty
# placeholder: mount the bundle read-only at /models/default instead.
ARG BUNDLE_DIR=deploy/docker/no-bundle
ARG APP_UID=10001

LABEL org.opencontainers.image.title="product-categorizer" \
      org.opencontainers.image.description="Streaming product categorization worker (Faust, ONNX, FAISS)"

# tini as PID 1 forwards SIGTERM so the consumer leaves its group cleanly (faster rebalances).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid ${APP_UID} app \
 && useradd --system --uid ${APP_UID} --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
# Owned by root, read-only for the app user: the worker never writes its bundle.
COPY ${BUNDLE_DIR}/ /models/default/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAM_BUNDLE_PATH=/models/default \
    STREAM_DATA_DIR=/tmp/stream_app \
    STREAM_WEB_PORT=6066 \
    STREAM_WEB_BIND=0.0.0.0

# Numeric user so Kubernetes can verify runAsNonRoot.
USER ${APP_UID}:${APP_UID}
WORKDIR /home/app
EXPOSE 6066

# No curl in a slim image: python's urllib. Non-200 (503) raises, so the check fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('STREAM_WEB_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["tini", "--", "python", "-m", "stream_app"]
CMD ["worker"]
