# pman's service image. BASE_IMAGE is a build argument so that a machine that
# cannot pull builds it on a local Debian+Python image instead.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/pman
COPY pyproject.toml README.md ./
COPY pman ./pman
RUN python3 -m pip install --no-cache-dir .

EXPOSE 5010
# gthread workers: polls are I/O-bound waits on the engine
CMD ["gunicorn", "--bind", "0.0.0.0:5010", "--workers", "2", "--threads", "8", \
     "--worker-class", "gthread", "--access-logfile", "-", "pman.wsgi:application"]
