"""Upstream providers: one adapter per wire format behind the small interface in ``base``."""

from costwarden.providers.adapters import make_adapter
from costwarden.providers.base import Deployment, ProviderAdapter, ProviderSpec, StreamMeter

__all__ = ["Deployment", "ProviderAdapter", "ProviderSpec", "StreamMeter", "make_adapter"]
