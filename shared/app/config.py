"""The deployment's settings, with every destination type the relay knows (shared.delivery.registry)."""

from __future__ import annotations

from collections.abc import Mapping

from shared.core.settings import Settings
from shared.core.settings import load_settings as parse_settings
from shared.delivery.base import DestinationType
from shared.delivery.registry import DESTINATION_TYPES


def load_settings(environ: Mapping[str, str],
                  destination_types: Mapping[str, DestinationType] = DESTINATION_TYPES) -> Settings:
    """Settings from the environment, validated all at once (SettingsError lists every problem)."""
    return parse_settings(environ, destination_types)
