"""``GET /metrics``: the app's Prometheus metrics (docs/metrics.md), in the text format.

Authenticated like the admin API -- ``Authorization: Bearer $COSTWARDEN_ADMIN_TOKEN``, the
same 401 and 403 answers -- unless ``[metrics] public = true``: the labels name orgs and
models and the values are spend, which is nobody else's business, and Prometheus scrape
configs take a bearer token (``authorization: {credentials: ...}``). 404 when
``[metrics] enabled = false``.

Who may (``admin.access``): the labels name every org, so the metrics are platform-wide
data: a platform_admin or a platform-wide viewer (an admin key) reads them; an org-scoped
principal gets a 403.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import error
from costwarden.admin.context import context


async def metrics(request: Request) -> Response:
    ctx = context(request)
    exporter = ctx.metrics
    if exporter is None:
        return error(404, "not_found", "metrics are off ([metrics] enabled = false)")
    if not ctx.metrics_public:
        (await authenticate(request)).read_platform()  # every org's spend in the labels
    body = await exporter.render()
    return Response(body, headers={"content-type": CONTENT_TYPE_LATEST})
