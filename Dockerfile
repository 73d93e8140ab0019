# One image for the API and the worker (different commands). Dependencies install in a layer
# before the source so code changes rebuild fast; the process runs as a non-root user.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN pip install uv && useradd --create-home --uid 10001 treadle
WORKDIR /app

COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p src/treadle && touch src/treadle/__init__.py \
 && uv pip install --system -c constraints.txt -e . \
 && rm -rf src

COPY alembic.ini ./
COPY migrations ./migrations
COPY src ./src
RUN uv pip install --system --no-deps -e .

USER treadle
ENV HOST=0.0.0.0 PORT=3001 TREADLE_ENV=production
EXPOSE 3001
CMD ["treadle", "serve"]
