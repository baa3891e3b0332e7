# pman's service image. BASE_IMAGE is a build argument so that a machine that
# cannot pull builds it on a local Debian+Python image instead (any image with
# python3 and its venv module).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/pman/venv/bin:$PATH
WORKDIR /opt/pman
COPY pyproject.toml README.md ./
COPY pman ./pman
# a virtualenv: Debian's own python3 refuses system-wide pip installs (PEP 668)
# with the Kubernetes client, which only CONTAINER_ENV=kubernetes imports
RUN python3 -m venv /opt/pman/venv && /opt/pman/venv/bin/pip install --no-cache-dir ".[kubernetes]"

EXPOSE 5010
ENV PMAN_HOST=0.0.0.0 PMAN_PORT=5010
# `pman serve`: granian workers plus the tracker process
CMD ["pman", "serve"]
