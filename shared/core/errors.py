"""The relay's errors: one root, a shallow tree by where the failure happened.

    HuntRelayError
    ├── SettingsError          the deployment's configuration is wrong (raised once, at start-up)
    ├── InvalidHuntRequest     a queue message is not a valid hunt request (terminal for that message)
    └── DeliveryError          a sink could not deliver
        ├── DeliveryRefused    never deliverable as configured (terminal: a failure record, no retry)
        └── DeliveryRetryable  worth trying again later (re-enqueue with backoff)

API responses are not exceptions: the hunting client returns them as values, and the pure classifier
(`shared.core.classify`) decides what each one means.
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


class DeliveryError(HuntRelayError):
    """A sink could not deliver a result envelope."""


class DeliveryRefused(DeliveryError):
    """The destination can never receive this result (unknown name, refused address, 410 Gone...)."""


class DeliveryRetryable(DeliveryError):
    """The destination failed in a way worth retrying (5xx, 429, timeout, connection error)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)
