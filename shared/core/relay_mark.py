"""The relay's mark on its own queue copies: who may set the fields the relay keeps.

A hunt the relay puts back on the queue (a 429, a transient fault, a delivery-only retry) carries fields that only
the relay may set: RELAY_FIELDS (`attempt`, `first_enqueued_at`, `last_error`, `pending_delivery`, `gate_waits`, and
any later relay-kept field added there). Anyone who can send to the queue could write them too: a forged `attempt` or
`first_enqueued_at` changes when a hunt gives up, a forged `pending_delivery` asks for a delivery-only retry. So
every copy the relay writes carries `relay_mark`:

    relay_mark = "v1," + base64(HMAC-SHA256(key, canonical(message without relay_mark)))
    canonical  = JSON with sorted keys, ASCII only, no spaces (the decoded message, so any encoding round-trips)

The mark covers the whole message (the request and the relay's fields together), so a mark cannot be moved to
another request. A message that carries relay fields without a valid mark is treated as a fresh hunt: those
fields (and the mark) are dropped, and the relay logs which were dropped (never their values).

Keys (32 random bytes or more) come from HUNT_MESSAGE_KEYS, or else from the relay's own storage (created once,
at the first hunt: shared.adapters.message_keys). The first key signs; every key verifies, so a rotation is:
put the new key first and keep the old one until HUNT_MAX_AGE has passed, then drop it.

Pure: keys are passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

RELAY_FIELDS = ("attempt", "first_enqueued_at", "last_error", "pending_delivery", "gate_waits")
MARK_FIELD = "relay_mark"
MIN_KEY_BYTES = 32
_VERSION = "v1,"


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a mark signs: the message without its mark, in one fixed JSON form."""
    unsigned = {key: value for key, value in body.items() if key != MARK_FIELD}
    return json.dumps(unsigned, sort_keys=True, ensure_ascii=True, separators=(",", ":"),
                      allow_nan=False).encode("ascii")


class MessageMark(Protocol):
    def sign(self, body: Mapping[str, Any]) -> str: ...
    def verify(self, body: Mapping[str, Any]) -> bool: ...


class RelayMark:
    """Signs with the first key, verifies with any (rotation)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("the relay mark needs at least one key")
        short = [index for index, key in enumerate(keys) if len(key) < MIN_KEY_BYTES]
        if short:
            raise ValueError(f"message key #{short[0] + 1} is shorter than {MIN_KEY_BYTES} bytes")
        self._keys = tuple(keys)

    def _digest(self, key: bytes, body: Mapping[str, Any]) -> str:
        return _VERSION + base64.b64encode(hmac.new(key, canonical(body), hashlib.sha256).digest()).decode("ascii")

    def sign(self, body: Mapping[str, Any]) -> str:
        return self._digest(self._keys[0], body)

    def verify(self, body: Mapping[str, Any]) -> bool:
        mark = body.get(MARK_FIELD)
        if not isinstance(mark, str):
            return False
        given = mark.encode("utf-8", "surrogatepass")   # compare_digest refuses non-ASCII text: compare bytes
        return any(hmac.compare_digest(given, self._digest(key, body).encode("ascii")) for key in self._keys)


def unmarked_relay_fields(body: Mapping[str, Any], mark: MessageMark | None) -> list[str]:
    """The relay-kept fields (and a mark) this message carries without a valid mark: they are to be dropped."""
    present = [name for name in (*RELAY_FIELDS, MARK_FIELD) if name in body]
    if not present or (mark is not None and mark.verify(body)):
        return []
    return present


def parse_keys(text: str) -> list[bytes]:
    """HUNT_MESSAGE_KEYS: space-separated standard base64 keys, the signing key first; ValueError naming the
    defect (never the key)."""
    keys = []
    for position, word in enumerate(text.split(), start=1):
        try:
            key = base64.b64decode(word, validate=True)
        except ValueError:
            raise ValueError(f"key #{position} is not standard base64") from None
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"key #{position} decodes to {len(key)} bytes; give at least {MIN_KEY_BYTES} random "
                             "bytes (python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\")")
        keys.append(key)
    if not keys:
        raise ValueError("no key given")
    return keys
