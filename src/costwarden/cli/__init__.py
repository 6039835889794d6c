"""The ``costwarden`` command line (``main``); ``python -m costwarden`` runs it too."""

from costwarden.cli.main import main

__all__ = ["main"]
