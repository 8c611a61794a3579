"""Health flags for config and display: pure, so the mapping is tested without a board."""

from __future__ import annotations

from firmware.config import HealthWeights
from firmware.failover.advert import Health


def health_weights(cfg: HealthWeights) -> dict[Health, int]:
    """Config keys are the flag names in lower case."""
    return {flag: getattr(cfg, flag.name.lower()) for flag in Health if flag}


def health_names(flags: Health) -> list[str]:
    return [flag.name.lower().replace("_", "-") for flag in Health if flag and flag & flags]
