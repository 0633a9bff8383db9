"""Which tenant a call acts for: its API key's tenant when keys are required, otherwise the
`aether-tenant` metadata (or the default tenant)."""

from __future__ import annotations

import grpc

from ..domain.errors import InvalidField
from ..domain.tenant import Tenant
from .access import PRINCIPAL

TENANT_METADATA = "aether-tenant"


def call_tenant(context: grpc.aio.ServicerContext, default: str) -> Tenant:
    principal = PRINCIPAL.get()
    if principal is not None:  # the access interceptor already refused any other tenant
        return Tenant(principal.tenant)
    tenant = default
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA:
            tenant = value if isinstance(value, str) else value.decode()
    try:
        return Tenant(tenant)
    except ValueError:
        raise InvalidField.one(
            TENANT_METADATA, "must be 1..64 characters of letters, digits, '_', '.', '-'"
        ) from None
