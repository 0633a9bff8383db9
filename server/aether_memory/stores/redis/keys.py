"""Every Redis key the service uses, scoped to one tenant.

Layout: `aether:<kind>:{<tenant>}:<part>...`. The tenant is the cluster hash tag, so one tenant's
keys share a slot and scripts may touch several of them. Client-chosen parts are percent-encoded,
so an id holding ':' or '{' can never make two different keys collide or move to another tenant.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

from ...domain.tenant import TENANT_PATTERN, Tenant

MEMORY_PREFIX = "aether:mem:"
EPISODE_DOC_PREFIX = "aether:epdoc:"


def _part(value: str) -> str:
    return quote(value, safe="-._~")


# ---- keys of the whole deployment, not of one tenant ------------------------------------------

# The page-token key the service made for itself when none is configured (shared by replicas).
PAGE_TOKEN_SECRET_KEY = "aether:meta:page-token-secret"
# The write-behind outbox is one stream per tenant (`TenantKeys.outbox`); these list the
# tenants that have one and the streams with entries not yet taken (stores/redis/outbox.py).
OUTBOX_TENANTS = "aether:outbox:tenants"
OUTBOX_DUE = "aether:outbox:due"
# The single outbox stream every write used before; the archiver still drains it.
LEGACY_OUTBOX_KEY = "aether:outbox"
# The tenants that have an episode stream (for retention and the indexer), and the streams with
# episodes the indexer has not taken yet (stores/redis/episode_index.py).
EPISODE_TENANTS = "aether:ep:tenants"
EPISODE_INDEX_DUE = "aether:epindex:due"
# The single queue of episodes to embed that every append wrote before; read once on upgrade.
LEGACY_EPISODE_INDEX_QUEUE = "aether:epindex:queue"
# One replica at a time runs each background job (stores/redis/lease.py); maintenance keeps its
# SCAN position across ticks and replicas.
MAINTENANCE_LEASE = "aether:maintenance:lease"
MAINTENANCE_CURSOR = "aether:maintenance:cursor"
ARCHIVER_LEASE = "aether:archiver:lease"
# How many partitions the outbox is split into (AETHER_ARCHIVE_PARTITIONS), as first recorded.
OUTBOX_META = "aether:meta:outbox"


def archiver_lease(partition: int, partitions: int) -> str:
    """The lease of the archiver of one outbox partition (one partition: ARCHIVER_LEASE)."""
    return ARCHIVER_LEASE if partitions == 1 else f"{ARCHIVER_LEASE}:{partition}"


API_KEY_PREFIX = "aether:apikey:"


def api_key(key_id: str) -> str:
    """An API key's record (hash of the secret, tenant, role), by its public id."""
    return API_KEY_PREFIX + _part(key_id)


def index_meta(index_name: str) -> str:
    """What the service records about its indexes (named by AETHER_INDEX_NAME): which model's
    vectors they hold. Not a tenant's key."""
    return "aether:meta:" + _part(index_name)


def tenant_index(index_name: str, tenant: str) -> str:
    """The index of one tenant's documents when each tenant has its own (AETHER_INDEX_LAYOUT
    `tenant`): named in the tenant's hash tag, so on a cluster it lives on the node that holds
    the tenant's keys (FT.CREATE and FT.SEARCH are routed by the index name's slot)."""
    return f"{index_name}:{{{tenant}}}"


def index_tenants(index_name: str) -> str:
    """The tenants that have an index of their own under `index_name` (the deployment-wide
    counts add theirs up)."""
    return index_meta(index_name) + ":tenants"


class TenantKeys:
    def __init__(self, tenant: str) -> None:
        if not TENANT_PATTERN.match(tenant):
            raise ValueError(f"invalid tenant {tenant!r}")
        self.tenant = tenant
        self._tag = "{" + tenant + "}"

    def _key(self, kind: str, *parts: str) -> str:
        return ":".join(["aether", kind, self._tag, *(_part(p) for p in parts)])

    def memory(self, memory_id: str) -> str:
        return self._key("mem", memory_id)

    def access(self, memory_id: str) -> str:
        return self._key("acc", memory_id)

    def links(self, memory_id: str) -> str:
        return self._key("links", memory_id)

    def dedup(self, fingerprint: str) -> str:
        return self._key("dedup", fingerprint)

    def session(self, session_id: str) -> str:
        return self._key("ws", session_id)

    def session_tail(self, agent_id: str, session_id: str) -> str:
        """The id of the memory last stored into an agent's session (its next one's neighbour)."""
        return self._key("stail", agent_id, session_id)

    def checkpoint(self, session_id: str, number: int) -> str:
        return self._key("cp", session_id, str(number))

    def checkpoint_index(self, session_id: str) -> str:
        return self._key("cps", session_id)

    def agent_state(self, agent_id: str) -> str:
        return self._key("agent", agent_id)

    def tool_result(self, digest: str) -> str:
        return self._key("tool", digest)

    def request(self, method: str, request_id: str) -> str:
        return self._key("req", method, request_id)

    def episodes(self) -> str:
        return self._key("ep")

    def outbox(self) -> str:
        """The tenant's write-behind stream: its writes' entries for the archive."""
        return self._key("outbox")

    def event(self, event_id: str) -> str:
        return self._key("evt", event_id)

    def index_switch(self, index_name: str) -> str:
        """Held while one replica moves the tenant's index to HNSW (memory_store.grow_indexes)."""
        return self._key("ixswitch", index_name)

    def episode_doc(self, episode_id: str) -> str:
        return self._key("epdoc", episode_id)

    def replication_marker(self) -> str:
        """Written before a WAIT on the tenant's primary (stores/redis/replication.py)."""
        return self._key("repl")

    def api_keys(self) -> str:
        """The ids of the tenant's API keys."""
        return ":".join(["aether", "apikeys", self._tag])


def tenant_of(key: str) -> Tenant:
    """The tenant whose hash tag a tenant's key carries."""
    return Tenant(key[key.index("{") + 1 : key.index("}")])


def tenant_tag(key: str) -> Tenant | None:
    """The tenant whose hash tag `key` carries, or None for a key that carries no tenant's
    (the deployment's own keys)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end < 0:
        return None
    tag = key[start + 1 : end]
    return Tenant(tag) if TENANT_PATTERN.match(tag) else None


@functools.lru_cache(maxsize=4096)
def keys_of(tenant: Tenant) -> TenantKeys:
    """The keys of `tenant` (one object per tenant while it is in use)."""
    return TenantKeys(tenant.name)
