"""The relay's errors, all of them: one root, a shallow tree by where the failure happened.

    HuntRelayError
    ├── SettingsError                the deployment's configuration is wrong (raised once, at start-up)
    ├── TemplateDefinitionError      a template file is malformed: a deployment bug, raised at start-up
    ├── InvalidHuntRequest           a queue message can never become a hunt (terminal for that message)
    │   ├── UnknownTemplate              field "template": no template of that name is shipped
    │   └── TemplateParameterError       field "parameters.<name>": missing, unknown or ill-typed
    ├── KqlValueError                a value is not valid for its KQL type (becomes one of the two above)
    ├── StreamBroken                 the API's 200 response broke mid-body (transient: the hunt runs again)
    ├── PendingConflict              another request under the job's id waits for its delivery
    ├── DeliveryError                a destination could not take a delivery
    │   ├── DeliveryRefused              never deliverable as configured (terminal: a failure record, no retry)
    │   │   └── DestinationRefused           a webhook URL or address the outbound policy refuses (SSRF)
    │   └── DeliveryRetryable            worth trying again later (a delivery-only retry)
    │       └── DeliveryFailed               a webhook could not be reached, or did not answer in time
    └── GrantError                   `grant-permission` could not grant the role; the message says what to do
        ├── SignInFailed, GrantNotAllowed, PrincipalNotFound, ResourceNotFound, RoleNotFound
        └── GraphRequestFailed

API responses and destinations' answers are values, not exceptions: the hunting client returns them, the pure
classifier (`shared.core.classify`) decides what an API's answer means, and a destination's `send` returns
Delivered, NotNow or Refused (shared.delivery.base). DeliveryError stays inside the delivery layer, but for one
case: a message sink's `prepare_result` raises DeliveryRefused when a result is too big for its destination and no
link to it can be signed.
An error that names a URL carries it redacted (`redact_url`): never its query, fragment or userinfo.
"""

from __future__ import annotations


class HuntRelayError(Exception):
    """Root of every error the relay raises on purpose."""


class SettingsError(HuntRelayError):
    """One or more settings are missing or malformed; the message lists each one and how to fix it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Hunt Relay settings are invalid:\n- " + "\n- ".join(problems))


class InvalidHuntRequest(HuntRelayError):
    """A queue message that can never become a hunt. `field` names the offending field ("" for the whole message)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class StreamBroken(HuntRelayError):
    """The API's 200 response ended before its JSON did (reset, timeout or truncation mid-body): transient."""


class DeliveryError(HuntRelayError):
    """A sink could not deliver a result envelope."""


class DeliveryRefused(DeliveryError):
    """The destination can never receive this result (unknown name, refused address, 410 Gone...)."""


class DeliveryRetryable(DeliveryError):
    """The destination failed in a way worth retrying (5xx, 429, timeout, connection error)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


def redact_url(url: str) -> str:
    """The URL without userinfo, query or fragment, printable and bounded: safe for messages and logs."""
    head = url.split("?", 1)[0].split("#", 1)[0]
    hidden_query = "?<redacted>" if "?" in url else ""
    scheme, sep, rest = head.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = "<userinfo>@" + authority.rpartition("@")[2]
        head = f"{scheme}{sep}{authority}{slash}{path}"
    printable = "".join(c if c.isprintable() else "?" for c in head)
    return (printable[:200] + "...") if len(printable) > 200 else printable + hidden_query


class KqlValueError(HuntRelayError):
    """A parameter value that is not valid for its declared type."""

    def __init__(self, parameter: str, type_name: str, reason: str) -> None:
        self.parameter = parameter
        self.type_name = type_name
        self.reason = reason
        super().__init__(f"parameter {parameter!r} ({type_name}): {reason}")


class TemplateDefinitionError(HuntRelayError):
    """A template file cannot be used as written; the message names the file and the problem."""


class UnknownTemplate(InvalidHuntRequest):
    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__("template", f"no template named {name[:64]!r}; available: {', '.join(available) or 'none'}")


class TemplateParameterError(InvalidHuntRequest):
    def __init__(self, parameter: str, reason: str) -> None:
        self.parameter = parameter
        super().__init__(f"parameters.{parameter}" if parameter else "parameters", reason)


class DestinationRefused(DeliveryRefused):
    """A webhook URL, or an address its host resolves to, that the relay will never send to."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)
        self.reason = reason
        super().__init__(f"refused webhook URL {self.url}: {reason}")


class DeliveryFailed(DeliveryRetryable):
    """The webhook could not be reached or did not answer in time; the request may or may not have arrived."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)
        self.reason = reason
        super().__init__(f"webhook {self.url} failed: {reason}")


class PendingConflict(HuntRelayError):
    """Another request under the same job id waits for its delivery: its kept body is not replaced."""


class GrantError(HuntRelayError):
    """The role could not be granted; the message says why and what to do."""


class SignInFailed(GrantError):
    pass


class GrantNotAllowed(GrantError):
    pass


class PrincipalNotFound(GrantError):
    pass


class ResourceNotFound(GrantError):
    pass


class RoleNotFound(GrantError):
    pass


class GraphRequestFailed(GrantError):
    pass
