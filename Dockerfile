# syntax=docker/dockerfile:1
# The smallcups image: the worker and every CLI command (ENTRYPOINT `smallcups`).
#
#   docker build -t smallcups:0.1.0 .
#   docker run --rm smallcups:0.1.0 --help
#
# Two stages: `build` makes wheels of the project and of all its dependencies (with a
# compiler at hand for any dependency that has no wheel for the platform); the final
# stage installs those wheels only, from a bind mount (no wheel stays in a layer), and
# holds no compiler, no build tool and no pip. docs/deploy.md says how it is run.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What the wheel is made of (pyproject.toml's packages and package data), nothing else.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY shards ./shards
COPY deploy ./deploy
COPY loadtest ./loadtest
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SMALLCUPS_WORKER_METRICS_HOST=0.0.0.0 \
    SMALLCUPS_WORKER_METRICS_PORT=9464
# /metrics, /healthz and /readyz listen on every interface of the container (worker.*
# above; docs/configuration.md), so probes and Prometheus reach them from outside.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels smallcups \
    && pip uninstall -y pip setuptools wheel \
    && groupadd --system --gid 10001 smallcups \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/smallcups \
       --shell /usr/sbin/nologin smallcups
USER 10001:10001
WORKDIR /home/smallcups
EXPOSE 9464
# The worker drains on SIGTERM (its partitions' committed results are flushed, then it
# leaves the group); give it worker.handover_flush_seconds and more before a SIGKILL
# (compose: stop_grace_period; Kubernetes: terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["smallcups"]
CMD ["worker"]
