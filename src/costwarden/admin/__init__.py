"""Admin surfaces reachable over HTTP (the CLI lives in ``costwarden.cli``)."""
