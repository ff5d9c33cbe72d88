"""The relay stack fixture, shared with tests/relay."""

from tests.relay.conftest import relay_stack  # noqa: F401
