"""Persistence for costwarden: orgs, projects, virtual keys and the request ledger.

The request path never talks to the database directly: keys are served from an in-memory
cache fed by :func:`costwarden.storage.repo.keys_changed_since`, and ledger rows leave the
request path through :class:`costwarden.storage.ledger.LedgerWriter`. Import the
submodules directly (``db``, ``schema``, ``migrate``, ``repo``, ``ledger``, ``usage``); this
package deliberately re-exports nothing so that importing records stays free of SQLAlchemy.
"""
