"""Upstream providers: one adapter per wire format behind the small interface in ``base``."""

from costwarden.providers.base import Deployment, ProviderAdapter, StreamMeter, make_adapter

__all__ = ["Deployment", "ProviderAdapter", "StreamMeter", "make_adapter"]
