# Kakehashi model server. Multi-stage: wheels are built in a full image, the runtime image is slim and runs as
# a non-root user. Models: the bundled person detector by default; mount a repository at /models (or bake one
# in with `COPY`) and set KAKEHASHI_MODEL=/models.
#   docker build -t kakehashi .
#   docker run -p 8000:8000 -p 8001:8001 -v "$PWD/models:/models:ro" -e KAKEHASHI_MODEL=/models kakehashi

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KAKEHASHI_HOST=0.0.0.0 \
    KAKEHASHI_PORT=8000 \
    KAKEHASHI_GRPC_PORT=8001 \
    KAKEHASHI_GRACE_SECONDS=25
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 kakehashi \
    && mkdir /models && chown kakehashi /models
USER 10001
WORKDIR /home/kakehashi
EXPOSE 8000 8001
# /metrics is served on the HTTP port (8000)
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
# exec form: the server is PID 1 and gets SIGTERM itself, so it drains (503 for new work, accepted requests
# finish, exit within KAKEHASHI_GRACE_SECONDS)
ENTRYPOINT ["kakehashi", "serve"]
