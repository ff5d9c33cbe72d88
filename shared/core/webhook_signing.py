"""Standard Webhooks 1.0 signing (symmetric, ``v1``): pure functions of the secret, id, timestamp and body.

- Secrets are configured as ``whsec_`` + standard base64 of 24 to 64 random bytes (the spec's bounds), one per
  destination; several at once during a rotation, each producing one signature.
- ``webhook-id`` is ``hunt_`` + the first 32 characters of the unpadded base64url SHA-256 of the job id
  (192 bits): stable across every retry of the job (the receiver's idempotency key), fixed length, made of
  ``[A-Za-z0-9_-]`` only (never a ``.``, which would blur the signed ``{id}.{timestamp}.{body}``), whatever
  characters the job id holds. The envelope carries the job id itself for correlation.
- ``webhook-signature`` is ``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``, space-separated
  when there are several secrets. The body is signed as the exact bytes sent.

The timestamp is passed in (whole Unix seconds of the attempt, new on every retry). Errors are ``ValueError``
with a message naming what is wrong, never the secret itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's marker, not a secret)
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
WEBHOOK_ID_PREFIX = "hunt_"
_WEBHOOK_ID_HASH_CHARS = 32


def parse_secret(value: str) -> bytes:
    """The key bytes of a ``whsec_`` secret; ValueError naming the defect (never echoing the value)."""
    value = value.strip()  # a Key Vault reference or an env file may leave a trailing newline
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
    encoded = value[len(SECRET_PREFIX) :]
    if not encoded:
        raise ValueError(f"webhook secret has nothing after {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        # from None: the decoder's message may quote the offending input
        raise ValueError(f"webhook secret is not standard base64 after {SECRET_PREFIX!r}") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"webhook secret decodes to {len(key)} bytes; "
            f"Standard Webhooks needs {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes"
        )
    return key


def parse_secret_list(where: str, value: str | None, problems: list[str]) -> tuple[str, ...]:
    """Space-separated secrets (a setting's value), each checked: a bad one is a problem naming `where` and its
    position, never its value."""
    secrets = tuple((value or "").split())
    for position, secret in enumerate(secrets, start=1):
        try:
            parse_secret(secret)
        except ValueError as error:
            problems.append(f"{where}: secret #{position}: {error}")
    return secrets


def webhook_id_for(job_id: str) -> str:
    """The ``webhook-id`` for a job: stable, ``.``-free and safe (see the module docstring)."""
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).digest()
    return WEBHOOK_ID_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii")[:_WEBHOOK_ID_HASH_CHARS]


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``{msg_id}.{timestamp}.{body}``."""
    if not secret:
        raise ValueError("webhook signing secret is empty")
    if not msg_id or "." in msg_id:
        raise ValueError("webhook-id must be non-empty and must not contain '.'")
    if isinstance(timestamp, bool) or timestamp < 0:
        raise ValueError("webhook-timestamp must be whole non-negative Unix seconds")
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed_content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated (key rotation)."""
    if not secrets:
        raise ValueError("no webhook signing secret configured for this destination")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def signed_headers(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt of ``body``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }
