"""Entra ID bearer tokens for the HTTP API (`Authorization: Bearer`): validated for signature, issuer, audience and
expiry against the keys the authority publishes (`<authority>/<tenant>/discovery/v2.0/keys`, fetched through the
relay's pooled session and kept for an hour, fetched again at once for a key id it has not seen).

    validate(token) -> claims | TokenRefused(reason)

Accepted issuers are the home tenant's (AZURE_TENANT_ID), in both of Entra's forms: `https://sts.windows.net/<tid>/`
(v1 tokens) and `<authority>/<tid>/v2.0`. The audience is HUNT_API_AUDIENCE. Nothing of the token is ever logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import requests

logger = logging.getLogger(__name__)

KEYS_LIFETIME_SECONDS = 3600.0
REFETCH_SECONDS = 60.0   # an unknown key id fetches the keys again at most this often (forged tokens cost nothing)
LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class TokenRefused:
    reason: str


class BearerValidator:
    def __init__(self, *, authority: str, tenant_id: str, audience: str, session: requests.Session,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._keys_url = f"{authority.rstrip('/')}/{tenant_id}/discovery/v2.0/keys"
        self._issuers = [f"https://sts.windows.net/{tenant_id}/", f"{authority.rstrip('/')}/{tenant_id}/v2.0"]
        self._audience = audience
        self._session = session
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None

    def validate(self, token: str) -> dict[str, Any] | TokenRefused:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return TokenRefused("the bearer token is not a JWT")
        key = self._key(str(header.get("kid", "")))
        if key is None:
            return TokenRefused("the bearer token is not signed by a key the authority publishes")
        try:
            claims: dict[str, Any] = jwt.decode(token, key=key, algorithms=["RS256"], audience=self._audience,
                                                issuer=self._issuers, leeway=LEEWAY_SECONDS,
                                                options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            return TokenRefused("the bearer token has expired")
        except jwt.InvalidAudienceError:
            return TokenRefused("the bearer token is for another audience (HUNT_API_AUDIENCE)")
        except jwt.InvalidIssuerError:
            return TokenRefused("the bearer token is from another tenant")
        except jwt.PyJWTError as error:
            return TokenRefused(f"the bearer token is not valid ({type(error).__name__})")
        return claims

    def _key(self, kid: str) -> Any:
        with self._lock:
            age = None if self._fetched_at is None else self._monotonic() - self._fetched_at
            if age is None or age > KEYS_LIFETIME_SECONDS or (kid not in self._keys and age > REFETCH_SECONDS):
                self._fetch()
            return self._keys.get(kid)

    def _fetch(self) -> None:
        try:
            reply = self._session.get(self._keys_url, timeout=10)
            reply.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(reply.json())
        except (requests.RequestException, ValueError, jwt.PyJWTError) as error:
            logger.warning("the authority's signing keys could not be fetched (%s)", type(error).__name__)
            if self._fetched_at is None:
                return
            self._fetched_at = self._monotonic()   # keep the keys we have; try again after REFETCH_SECONDS
            return
        self._keys = {str(key.key_id): key.key for key in keys.keys}
        self._fetched_at = self._monotonic()
