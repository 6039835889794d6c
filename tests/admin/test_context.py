"""The admin context: what the app hands the admin API, and that it keeps the token hidden."""

from __future__ import annotations

from pathlib import Path

from costwarden.admin.context import AdminContext
from costwarden.app.factory import create_app
from costwarden.config.settings import load_settings
from tests.helpers import PROVIDER_ENV, gateway_toml

TOKEN = "adm-secret-never-shown"
MOCK_URL = "http://127.0.0.1:9"  # nothing listens there; nothing here calls upstream


def test_context_is_the_apps_parts_and_hides_the_token(tmp_path: Path) -> None:
    settings = load_settings(
        text=gateway_toml(MOCK_URL, f"sqlite:///{tmp_path / 'ctx.db'}"),
        env={**PROVIDER_ENV, "COSTWARDEN_ADMIN_TOKEN": TOKEN},
    )
    app = create_app(settings)
    try:
        ctx = app.admin.state.admin
        assert isinstance(ctx, AdminContext)
        # The handlers act on the running gateway's own objects, not copies.
        assert ctx.keys is app.keys and ctx.enforcer is app.enforcer
        assert ctx.switches is app.switches and ctx.breakers is app.breakers
        assert ctx.route_table is app.route_table and ctx.events is app.events
        assert ctx.route_deployments == {r.model: tuple(r.deployments) for r in settings.routes}
        assert ctx.deployments == tuple(sorted(settings.deployments))
        assert ctx.admin_token == TOKEN
        # A context in a log line or a traceback's locals must not carry the secret.
        assert TOKEN not in repr(ctx) and TOKEN not in str(ctx)
    finally:
        app.engine.dispose()
