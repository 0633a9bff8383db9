"""Opaque page tokens bound to the request that produced them.

A token carries a fingerprint of the request (tenant, method and every field except the page
fields) and a position, sealed with a keyed hash so a client can neither read nor forge one.
Tokens never grant access: tenant checks run on every page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

from .errors import InvalidPageToken

_MAC_BYTES = 12
_FINGERPRINT_BYTES = 16


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def fingerprint(self, *parts: bytes | str) -> bytes:
        digest = hashlib.blake2b(digest_size=_FINGERPRINT_BYTES, key=self._secret)
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            digest.update(struct.pack(">I", len(data)))
            digest.update(data)
        return digest.digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, fingerprint: bytes, offset: int, position: bytes = b"") -> str:
        payload = fingerprint + struct.pack(">Q", offset) + position
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def decode(self, token: str, fingerprint: bytes) -> tuple[int, bytes]:
        """(offset, position) of a token issued for the same request, else InvalidPageToken."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as exc:
            raise InvalidPageToken("page_token is not a token this service issued") from exc
        if len(raw) < _FINGERPRINT_BYTES + 8 + _MAC_BYTES:
            raise InvalidPageToken("page_token is not a token this service issued")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidPageToken("page_token is not a token this service issued")
        if payload[:_FINGERPRINT_BYTES] != fingerprint:
            raise InvalidPageToken("page_token belongs to a request with different fields")
        (offset,) = struct.unpack(">Q", payload[_FINGERPRINT_BYTES : _FINGERPRINT_BYTES + 8])
        return offset, payload[_FINGERPRINT_BYTES + 8 :]
