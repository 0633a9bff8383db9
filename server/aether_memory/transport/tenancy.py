"""Which tenant a call acts for: the `aether-tenant` metadata until API keys exist (issue 9)."""

from __future__ import annotations

import grpc

from ..domain.errors import InvalidField
from ..stores.redis.keys import TENANT_PATTERN, TenantKeys

TENANT_METADATA = "aether-tenant"


def tenant_keys(context: grpc.aio.ServicerContext, default: str) -> TenantKeys:
    tenant = default
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA:
            tenant = value if isinstance(value, str) else value.decode()
    if not TENANT_PATTERN.match(tenant):
        raise InvalidField.one(
            TENANT_METADATA, "must be 1..64 characters of letters, digits, '_', '.', '-'"
        )
    return TenantKeys(tenant)
