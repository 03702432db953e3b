# jibri-pod-controller container image.
#
#   docker build -t jibri-pod-controller:0.1.0 .
#
# The runtime stage runs as 1000:1000 with nothing but the Python runtime and the application's
# virtual environment; it works with a read-only root filesystem.

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src

# Build the wheel (the build backend is fetched in an isolated build environment), then install
# it with its dependencies into a virtual environment that the runtime stage copies as is.
# pip compiles the .pyc files here, so the read-only runtime never needs to write them.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl \
    && /opt/venv/bin/python -c "import jibri_pod_controller.app"


FROM python:3.11-slim

LABEL org.opencontainers.image.title="jibri-pod-controller" \
      org.opencontainers.image.description="Keeps a pool of spare Jibri pods in Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0 OR MIT"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/venv /opt/venv

USER 1000:1000
EXPOSE 8080

ENTRYPOINT ["/opt/venv/bin/jibri-pod-controller"]
