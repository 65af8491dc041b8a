# The tankwatch application image: used by the compose stack's topic-init, replay and
# pipeline services (`docker compose build`). CPU-only TensorFlow comes from PyPI.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies change less often than code: install them in their own layer first.
COPY pyproject.toml README.md ./
RUN mkdir -p tankwatch pipeline producers models \
    && touch tankwatch/__init__.py pipeline/__init__.py producers/__init__.py models/__init__.py \
    && pip install . \
    && pip uninstall -y tankwatch

COPY tankwatch ./tankwatch
COPY pipeline ./pipeline
COPY producers ./producers
COPY models ./models
COPY data ./data
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tankwatch \
    && mkdir -p /var/lib/tankwatch \
    && chown tankwatch /var/lib/tankwatch

USER tankwatch

# The fixed environment contract (docs/architecture.md); compose overrides per service.
ENV TANKWATCH_MODEL=/app/models/artifacts/default \
    TANKWATCH_STATE_DIR=/var/lib/tankwatch \
    TANKWATCH_HTTP_PORT=8000
VOLUME ["/var/lib/tankwatch"]
EXPOSE 8000

ENTRYPOINT ["tankwatch"]
CMD ["--help"]
