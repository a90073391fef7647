# One image for every role: `plateau serve` (API), `plateau worker --gpu`,
# `plateau reaper` and `plateau db upgrade`; docker-compose.yml wires them up.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    PLATEAU_DATA_DIR=/data \
    PLATEAU_VAR_DIR=/var/lib/plateau

RUN useradd --create-home --uid 10001 plateau \
    && mkdir -p /data /var/lib/plateau \
    && chown plateau:plateau /var/lib/plateau

WORKDIR /srv/plateau

# dependencies first, so a code change does not reinstall torch
COPY pyproject.toml README.md ./
RUN mkdir -p engine app workers migrations cli \
    && pip install . \
    && pip uninstall -y plateau

COPY alembic.ini ./
COPY engine engine
COPY app app
COPY workers workers
COPY migrations migrations
COPY cli cli
# editable: migration scripts and static files are read from the source tree
RUN pip install --no-deps -e .

USER plateau
EXPOSE 8000 9100

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["plateau", "serve", "--host", "0.0.0.0", "--port", "8000"]
