"""Who is asking the admin API, and what they may read and change.

:func:`authenticate` turns a request's ``Authorization: Bearer ...`` into an :class:`Access`:

- the admin token (``COSTWARDEN_ADMIN_TOKEN``): a ``platform_admin``;
- an admin key (``cwa-...``, ``costwarden admin-keys create``): its role and org; a revoked or
  unknown key is refused;
- a JWT from the company's identity provider, when ``[dashboard.jwt]`` is configured
  (``dashboard.jwt_auth``): the role and org of its claims.

The dashboard signs a person in with the same credentials (:func:`principal_for`) and keeps
the principal in its session cookie; every page request re-checks it here
(:func:`access_for`), so a key revoked after sign-in ends its sessions at once.

An :class:`Access` answers the handlers' questions with the pure rules of
``dashboard.roles`` and raises :class:`~costwarden.core.errors.Forbidden` (403) when the
answer is no: an org_admin or org-scoped viewer naming another org, reading platform-wide
data (which holds every org's figures) or changing a platform-wide setting; a viewer
changing anything. Missing or bad credentials are
:class:`~costwarden.core.errors.NotSignedIn` (401). Nothing of a credential is ever put in
an answer or a log line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from collections.abc import Mapping

from starlette.requests import Request

from costwarden.admin.context import AdminContext, context
from costwarden.core.actors import MAX_ACTOR_LEN, clean_actor
from costwarden.core.errors import AdminApiOff, Forbidden, NotSignedIn
from costwarden.dashboard import jwt_auth
from costwarden.dashboard.roles import Principal, can_read, can_write
from costwarden.storage import repo
from costwarden.storage.admin_keys import ADMIN_KEY_PREFIX, find_admin_key, get_admin_key

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """A signed-in principal, with its org's name (the admin API names orgs by name)."""

    principal: Principal
    #: the name of ``principal.org_id``; None for a platform-wide principal
    org_name: str | None = None
    #: who writes are audited as: ``admin-api`` (the token), ``admin-key:<id>``, ``jwt:<sub>``
    actor: str = "admin-api"

    def actor_for(self, body: Mapping[str, object]) -> str:
        """Who a change is audited as: the principal itself when the body names no
        ``actor``; else the admin token is shared (a script or the CLI names who it acts
        for), so its name is taken as given, while an admin key or a JWT is a known
        identity, which a body cannot replace: the name given is kept beside it
        (``admin-key:adk_... for ana``). InvalidInput for a name clean_actor refuses,
        an explicit null included."""
        if "actor" not in body:
            return self.actor
        name = clean_actor(body["actor"])
        if self.principal.via == "token":
            return name
        return clean_actor(f"{self.actor} for {name}"[:MAX_ACTOR_LEN])

    @property
    def platform_wide(self) -> bool:
        return self.principal.platform_wide

    def org(self, requested: str | None) -> str | None:
        """The org (by name) a read is filtered by: what was asked for a platform-wide
        principal (None: every org); its own org for an org-scoped one, which may name
        no other."""
        if self.principal.platform_wide:
            return requested
        if requested is not None and requested.strip() != self.org_name:
            # The name asked for is not repeated: an answer never names another org.
            raise Forbidden(f"this {self.principal.role} may see only its own org")
        return self.org_name

    def read_platform(self) -> None:
        """Forbidden unless it may read platform-wide data (every org's figures at once)."""
        if not can_read(self.principal, None):
            raise Forbidden(f"this {self.principal.role} sees only its own org")

    def read_org_id(self, org_id: str | None) -> None:
        """Forbidden unless it may read what belongs to org ``org_id`` (None: no org)."""
        if not can_read(self.principal, org_id):
            raise Forbidden(f"this {self.principal.role} may not see another org's data")

    def write_org_id(self, org_id: str | None) -> None:
        """Forbidden unless it may change what belongs to org ``org_id`` (None: a
        platform-wide setting)."""
        if not can_write(self.principal, org_id):
            raise Forbidden(self._no_write(org_id is None))

    def write_org(self, name: str | None) -> None:
        """:meth:`write_org_id` for an org named ``name`` (None: platform-wide)."""
        if self.principal.role == "platform_admin":
            return
        if self.principal.role == "org_admin" and name is not None and (
            name.strip() == self.org_name
        ):
            return
        raise Forbidden(self._no_write(name is None))

    def write_platform(self) -> None:
        """Forbidden unless it may change platform-wide settings."""
        self.write_org_id(None)

    def _no_write(self, platform: bool) -> str:
        role = self.principal.role
        if role == "viewer":
            return "a viewer cannot change anything"
        if platform:
            return f"this {role} cannot change platform-wide settings"
        return f"this {role} may change only its own org"


def bearer(request: Request) -> str | None:
    """The bearer credential of ``request``'s Authorization header, or None."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


async def principal_for(ctx: AdminContext, credential: str) -> tuple[Principal, str]:
    """Who ``credential`` (the admin token, an admin key or a JWT) signs in, and the actor
    their changes are audited as; NotSignedIn when it signs in no one."""
    token = ctx.admin_token
    if token and hmac.compare_digest(credential.encode(), token.encode()):
        return Principal("platform_admin", None, None, "token"), "admin-api"
    if credential.startswith(ADMIN_KEY_PREFIX):
        record = await asyncio.to_thread(find_admin_key, ctx.engine, credential)
        if record is None or record.revoked:
            raise NotSignedIn("unknown or revoked admin key")
        return record.principal(), f"admin-key:{record.id}"
    if ctx.jwt is not None and credential.count(".") == 2:
        verdict = jwt_auth.verify(credential, ctx.jwt, ctx.clock())
        if isinstance(verdict, jwt_auth.Refusal):
            logger.info("a JWT was refused: %s", verdict.reason)
            raise NotSignedIn(f"JWT refused: {verdict.reason}")
        return verdict.principal, f"jwt:{verdict.subject or '?'}"
    if not token:
        raise AdminApiOff(
            "the admin API is off: set COSTWARDEN_ADMIN_TOKEN or use an admin key"
        )
    raise NotSignedIn("missing or wrong admin token")


async def access_for(ctx: AdminContext, principal: Principal, actor: str) -> Access:
    """``principal``'s Access, checked again now: its admin key still live, its org still
    there (NotSignedIn otherwise)."""
    if principal.key_id is not None:
        record = await asyncio.to_thread(get_admin_key, ctx.engine, principal.key_id)
        if record is None or record.revoked:
            raise NotSignedIn("the admin key was revoked")
    if principal.org_id is None:
        return Access(principal, None, actor)
    org = await asyncio.to_thread(repo.get_org, ctx.engine, principal.org_id)
    if org is None:
        raise NotSignedIn("the principal's org does not exist")
    return Access(principal, org.name, actor)


async def authenticate(request: Request) -> Access:
    """The Access of ``request``'s bearer credential; NotSignedIn (401) or AdminApiOff (403)
    when there is none that signs anyone in."""
    ctx = context(request)
    credential = bearer(request)
    if credential is None:
        if not ctx.admin_token and ctx.jwt is None:
            raise AdminApiOff(
                "the admin API is off: set COSTWARDEN_ADMIN_TOKEN or use an admin key"
            )
        raise NotSignedIn("missing or wrong admin token")
    principal, actor = await principal_for(ctx, credential)
    if principal.via == "token":  # the token's principal has no key or org to re-check
        return Access(principal, None, actor)
    return await access_for(ctx, principal, actor)
