"""Access tokens the sandbox issues and checks, and what each hunting API demands of them.

Tokens are compact JWTs signed with RS256 under an RSA key drawn when the sandbox starts (so a token from one run
is worthless in the next), with a `kid` the authority publishes at `/{tenant}/discovery/v2.0/keys`, as Entra ID
signs and publishes: an API the relay serves can validate them (shared.app.http_auth). They carry the claims Entra
ID puts in app-only tokens (aud, iss, tid, oid,
appid, roles, iat, nbf, exp). Client assertions (certificate credentials) are RS256/PS256 JWTs checked against
the app's registered certificate.

Errors:
    TokenError            the bearer token is missing, malformed, badly signed or expired (the API's 401)
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


@dataclass(frozen=True)
class HuntingApi:
    name: str          # "mde", "m365d", "graph"
    audience: str      # the resource a token must be issued for
    role: str          # the application role the API demands


APIS: dict[str, HuntingApi] = {
    "mde": HuntingApi("mde", "https://api.securitycenter.microsoft.com", "AdvancedQuery.Read.All"),
    "m365d": HuntingApi("m365d", "https://api.security.microsoft.com", "AdvancedHunting.Read.All"),
    "graph": HuntingApi("graph", "https://graph.microsoft.com", "ThreatHunting.Read.All"),
}
ALL_HUNTING_ROLES: list[str] = [api.role for api in APIS.values()]
_ROLE_AUDIENCE = {api.role: api.audience for api in APIS.values()}


class TokenError(Exception):
    """A bearer token the API refuses with 401."""


def normalise_audience(resource: str) -> str:
    """`https://graph.microsoft.com/` and `https://graph.microsoft.com/.default` name the same resource."""
    resource = resource.strip()
    if resource.endswith("/.default"):
        resource = resource[: -len("/.default")]
    return resource.rstrip("/")


def roles_for_audience(held_roles: list[str], audience: str) -> list[str]:
    """The roles a token for `audience` carries: each hunting role only in its own API's tokens; any other role
    (directory roles such as AppRoleAssignment.ReadWrite.All) in Graph tokens, where such roles live."""
    audience = normalise_audience(audience)
    carried = []
    for role in held_roles:
        home = _ROLE_AUDIENCE.get(role, APIS["graph"].audience)
        if home == audience:
            carried.append(role)
    return carried


def object_id_for(client_id: str) -> str:
    """A stable object id for a client id, so that the same identity always has the same oid."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "sandbox-principal:" + client_id))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("The token is not a JWT (expected three dot-separated parts)")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as error:
        raise TokenError("The token is malformed") from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("The token is malformed")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


class TokenIssuer:
    """Mints and verifies the sandbox's access tokens (RS256, a fresh key per start, published as a JWKS)."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self._key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        self._jwk = {"kty": "RSA", "use": "sig", "alg": "RS256",
                     "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                     "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))}
        self.key_id = hashlib.sha256(json.dumps(self._jwk, sort_keys=True).encode()).hexdigest()[:32]
        self._jwk["kid"] = self.key_id

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._jwk)]}

    def mint(
        self, *, audience: str, tenant: str, client_id: str, roles: list[str], lifetime_seconds: float,
        now: float | None = None, extra: dict[str, Any] | None = None,
    ) -> tuple[str, int]:
        """Returns the token and its expiry (unix seconds)."""
        issued = int(now if now is not None else time.time())
        expires = issued + max(1, round(lifetime_seconds))
        claims = {
            "aud": normalise_audience(audience),
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "tid": tenant,
            "oid": object_id_for(client_id),
            "sub": object_id_for(client_id),
            "appid": client_id,
            "idtyp": "app",
            "roles": roles,
            "ver": "1.0",
            "uti": uuid.uuid4().hex,
            **(extra or {}),
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature), expires

    def issued(self, token: str) -> bool:
        """Whether the token names this issuer's key (rather than being a certificate credential's JWT)."""
        try:
            header, _, _, _ = _split(token)
        except TokenError:
            return False
        return header.get("kid") == self.key_id

    def verify(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a token this sandbox issued and that is in date; raises TokenError otherwise."""
        header, claims, signing_input, signature = _split(token)
        if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            raise TokenError("The token's signing key is not accepted")
        try:
            self._key.public_key().verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise TokenError("The token's signature is invalid") from None
        moment = now if now is not None else time.time()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= moment:
            raise TokenError("The token is expired")
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > moment + 300:
            raise TokenError("The token is not yet valid")
        return claims


def verify_client_assertion(assertion: str, certificate_pem: bytes, *, client_id: str, audience: str) -> None:
    """Checks a certificate credential's JWT (RS256 or PS256, signed with the key of the app's registered
    certificate, iss = sub = client id, aud = the token endpoint, in date). Raises TokenError naming the fault."""
    header, claims, signing_input, signature = _split(assertion)
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TokenError("The registered certificate does not hold an RSA key")
    algorithm = header.get("alg")
    pad: padding.AsymmetricPadding
    if algorithm == "RS256":
        pad = padding.PKCS1v15()
    elif algorithm == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)
    else:
        raise TokenError(f"The client assertion's algorithm {algorithm!r} is not supported")
    try:
        public_key.verify(signature, signing_input, pad, hashes.SHA256())
    except InvalidSignature as error:
        raise TokenError("The client assertion is not signed by the registered certificate") from error
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise TokenError("The client assertion's iss and sub must be the client id")
    if normalise_audience(str(claims.get("aud", ""))) != normalise_audience(audience):
        raise TokenError("The client assertion's audience is not this token endpoint")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= time.time():
        raise TokenError("The client assertion is expired")
