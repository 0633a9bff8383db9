"""Opaque page tokens bound to the request that produced them.

A token carries a fingerprint of the request (tenant, method and every field except the page
fields) and a position, sealed with a keyed hash so a client can neither read nor forge one.
Tokens never grant access: tenant checks run on every page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct

from .errors import InvalidPageToken

_MAC_BYTES = 12
_FINGERPRINT_BYTES = 16
# The deepest offset a token may carry: no listing pages further (RediSearch answers at most
# MAXSEARCHRESULTS, 1,000,000 by default, and search stops at 1,000). A token sealed with a
# known secret (the default one) can say anything; anything beyond is no token of ours.
MAX_OFFSET = 1_000_000
_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_U64 = 1 << 64


def is_stream_id(text: str) -> bool:
    """Whether `text` is a Redis stream id ("ms-seq", each an unsigned 64-bit number)."""
    match = _STREAM_ID.match(text)
    return match is not None and all(int(part) < _U64 for part in match.groups())


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
        position = payload[_FINGERPRINT_BYTES + 8 :]
        if offset > MAX_OFFSET or not (position == b"" or _is_stream_id_bytes(position)):
            raise InvalidPageToken("page_token is not a token this service issued")
        return offset, position


def _is_stream_id_bytes(raw: bytes) -> bool:
    try:
        return is_stream_id(raw.decode("ascii"))
    except UnicodeDecodeError:
        return False
