# syntax=docker/dockerfile:1.7
# One image recipe for every qstack component (STYLE.md rule 4):
#   docker build --build-arg SERVICE=worker -t qstack-worker .
# SERVICE is one of: registry, scheduler, worker, failover, qctl.
# Dependencies are installed in their own cached layer from uv.lock alone, so editing the
# source only rebuilds the (small) workspace layer, in the style of carderne/postmodern-mono.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /bin/uv
ARG SERVICE=worker
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# The package of SERVICE: registry -> qregistry ..., qctl stays qctl.
RUN case "$SERVICE" in \
      registry|scheduler|worker|failover) echo "q$SERVICE" ;; \
      qctl) echo qctl ;; \
      *) echo "unknown SERVICE '$SERVICE' (registry, scheduler, worker, failover, qctl)" >&2; exit 1 ;; \
    esac > /package

# Layer 1: third-party dependencies only. uv needs every member's pyproject.toml to know
# the workspace, but none of the source.
COPY uv.lock pyproject.toml ./
COPY shared/pyproject.toml shared/
COPY cli/pyproject.toml cli/
COPY services/registry/pyproject.toml services/registry/
COPY services/scheduler/pyproject.toml services/scheduler/
COPY services/worker/pyproject.toml services/worker/
COPY services/failover/pyproject.toml services/failover/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "$(cat /package)"

# Layer 2: the workspace members SERVICE needs, installed non-editable so that the runtime
# image carries the virtual environment only.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "$(cat /package)" \
 && ln -s "/app/.venv/bin/$(cat /package)" /app/.venv/bin/qstack-entrypoint


FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE=worker
LABEL org.opencontainers.image.title="qstack-${SERVICE}" \
      org.opencontainers.image.description="qstack ${SERVICE}"
RUN groupadd --system --gid 10001 qstack \
 && useradd --system --uid 10001 --gid qstack --home-dir /app --shell /usr/sbin/nologin qstack
COPY --from=build --chown=qstack:qstack /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    QSTACK_HOST=0.0.0.0
WORKDIR /app
USER qstack:qstack
# compose.yaml names the command of each service; the default runs the SERVICE's script.
CMD ["qstack-entrypoint"]
