"""costwarden: a self-hosted LLM cost-control gateway."""

__version__ = "0.1.0"
