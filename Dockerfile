# syntax=docker/dockerfile:1
# jibri-pod-controller container image.
#
#   docker build -t jibri-pod-controller:0.1.0 .
#   scripts/build-image.sh            # the same, with buildah (no daemon), as the tests build it
#
# Behind a proxy that re-signs HTTPS, hand its CA bundle to the build as a secret (it is mounted
# for the pip steps only and never stored in a layer):
#
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt .
#
# The runtime stage runs as 1000:1000 with nothing but the Python runtime and the application's
# virtual environment; it works with a read-only root filesystem.

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src

# Build the wheel (the build backend is fetched in an isolated build environment), then install
# it with its dependencies into a virtual environment that the runtime stage copies as is. The
# environment gets no pip or setuptools of its own (the builder's pip installs into it), which
# keeps ~25 MB of installers out of the image. pip compiles the .pyc files here, so the
# read-only runtime never needs to write them. Downloads are cached between builds.
RUN --mount=type=secret,id=ca-certificates \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install /wheels/*.whl \
    && /opt/venv/bin/python -c "import jibri_pod_controller.app"


FROM python:3.11-slim

# The package's version (pyproject.toml); scripts/build-image.sh passes it, a static test keeps
# this default equal to it.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="jibri-pod-controller" \
      org.opencontainers.image.description="Keeps a pool of spare Jibri pods in Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0 OR MIT" \
      org.opencontainers.image.version="$VERSION"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/venv /opt/venv

USER 1000:1000
EXPOSE 8080

ENTRYPOINT ["/opt/venv/bin/jibri-pod-controller"]
