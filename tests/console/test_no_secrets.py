"""No secret on any page: with every kind of secret the gateway holds or has seen -- the admin
token, an admin key, virtual keys, provider API keys, a webhook channel's signing secret and
its URL's token, and a cloud key a request carried (blocked by the scan) -- every page,
fragment and the CSV, as the platform admin (who sees the most), holds none of them."""

from __future__ import annotations

import httpx
import openai

from tests.console.conftest import TOKEN, Orgs, Signed, dashboard_routes
from tests.helpers import PROVIDER_ENV, LiveGateway

AWS_KEY = "AKIAQ3EGRTW5PLXJ7Z4M"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK_TOKEN = "tok-in-the-hook-url-0f9e8d"


async def test_no_page_shows_a_secret(gw: LiveGateway, orgs: Orgs, admin: Signed) -> None:
    async with httpx.AsyncClient(
        base_url=gw.base_url, headers={"authorization": f"Bearer {TOKEN}"}
    ) as api:
        r = await api.put(
            "/admin/alert-channels/ops-hook",
            json={"type": "webhook", "url": f"http://127.0.0.1:9/hook?token={HOOK_TOKEN}",
                  "secret": HOOK_SECRET},
        )  # fmt: skip
        assert r.status_code == 200, r.text
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as sdk:
        await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        try:
            await sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"deploy with {AWS_KEY} now"}],
            )
        except openai.PermissionDeniedError:
            pass
        else:
            raise AssertionError("the scan did not block the AWS key")
    await gw.app.ledger.flush()
    secrets = [
        TOKEN, orgs.acme_key, orgs.globex_key, orgs.acme_admin, orgs.acme_viewer,
        orgs.platform_viewer, HOOK_SECRET, HOOK_TOKEN, AWS_KEY, *PROVIDER_ENV.values(),
    ]  # fmt: skip
    pages = sorted(
        path for method, path in dashboard_routes()
        if method == "GET" and "{" not in path and path != "/dashboard/stream"
    )  # fmt: skip
    assert "/dashboard/security" in pages and "/dashboard/alerts" in pages
    for path in pages:
        r = await admin.client.get(path)
        assert r.status_code == 200, path
        for secret in secrets:
            assert secret not in r.text, (path, secret[:6])
