"""Page tokens at the edge: a request's fingerprint is every field but the page fields."""

from __future__ import annotations

from google.protobuf.message import Message

from ..domain.paging import PageTokens
from ..domain.tenant import Tenant


def page_fingerprint(tokens: PageTokens, tenant: Tenant, request: Message) -> bytes:
    """Binds a token to the tenant, the request type and every non-paging field."""
    stripped = type(request)()
    stripped.CopyFrom(request)
    for name in ("page_token", "page_size"):
        stripped.ClearField(name)
    return tokens.fingerprint(
        tenant.name, request.DESCRIPTOR.full_name, stripped.SerializeToString(deterministic=True)
    )


def page_start(tokens: PageTokens, token: str, fingerprint: bytes) -> tuple[int, bytes]:
    """(offset, position) carried by `token`; (0, b"") for the first page."""
    return tokens.decode(token, fingerprint) if token else (0, b"")
