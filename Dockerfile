# syntax=docker/dockerfile:1
# costwarden's image: docs/deployment.md. tests/test_deploy.py reads this file and runs its
# pip commands, its CMD and its HEALTHCHECK in a fresh virtualenv, since no container engine
# runs where the tests do: keep every pip command on a RUN line of its own.

# --- build: the project's wheel and a wheel of every dependency (a wheelhouse), so that the
# runtime stage installs offline and carries no compiler, no pip cache and no source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/pip pip wheel --wheel-dir /wheels .

# --- runtime
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COSTWARDEN_HOST=0.0.0.0 \
    COSTWARDEN_PORT=4000
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels pip install --no-cache-dir --no-index --find-links /wheels costwarden
RUN useradd --system --uid 10001 --home-dir /var/lib/costwarden --create-home --shell /usr/sbin/nologin costwarden
# The ledger's spool ([storage] spool_dir, relative to the working directory): rows the
# database could not take wait here until it answers. Made here, owned by the user, so that a
# volume mounted on it (compose.yaml) starts with that owner.
RUN install -d -o costwarden -g costwarden /var/lib/costwarden/costwarden-data/ledger-spool
COPY deploy/costwarden.toml /etc/costwarden/costwarden.toml
# The working directory is the user's own: a SQLite database (the config's default when no
# COSTWARDEN_DATABASE_URL is given) lives there; mount a volume on it to keep one.
WORKDIR /var/lib/costwarden
USER costwarden
EXPOSE 4000
# /healthz needs no token; urllib, since the slim image has no curl. The port follows
# COSTWARDEN_PORT when a deployment moves it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COSTWARDEN_PORT', '4000'), timeout=2)"]
# One worker process per container by default: scale with more containers (compose.yaml
# runs two), or set COSTWARDEN_WORKERS to the container's cores (Redis required).
CMD ["costwarden", "serve", "--config", "/etc/costwarden/costwarden.toml"]
