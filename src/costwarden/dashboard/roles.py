"""Roles: who may read and who may change what, as pure functions of a :class:`Principal`.

Three roles (:data:`ROLES`):

* ``platform_admin`` -- the platform staff: reads and changes everything, every org's and the
  platform-wide settings (the global kill switch, tiers, deployments). Never bound to an org.
* ``org_admin`` -- an org's own admin: reads and changes its own org only. It never sees
  another org, nor platform-wide data (platform totals, top orgs: other orgs' figures are in
  them), and never changes a platform-wide setting.
* ``viewer`` -- read-only, everywhere it can read. A viewer is either *platform-wide*
  (``org_id`` None: it reads what a platform_admin reads) or *org-scoped* (it reads what its
  org's org_admin reads). Both never change anything.

"Data" is identified by the org it belongs to: an org id, or None for platform-wide data.
Anything that spans several orgs (a list of orgs, the platform's totals) is platform-wide;
an org-scoped principal is given its own org's slice of it instead (:func:`visible_orgs`).

The default is refusal: an unknown role, or a principal built around these checks, reads and
changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal

from costwarden.core.errors import InvalidInput

Role = Literal["platform_admin", "org_admin", "viewer"]
Via = Literal["token", "admin_key", "jwt"]

ROLES: tuple[Role, ...] = ("platform_admin", "org_admin", "viewer")
VIAS: tuple[Via, ...] = ("token", "admin_key", "jwt")


def parse_role(value: object) -> Role:
    """``value`` as a :data:`Role`; InvalidInput for anything else."""
    for role in ROLES:
        if value == role:
            return role
    raise InvalidInput(f"role must be one of: {', '.join(ROLES)}")


def check_scope(role: Role, org_id: str | None) -> None:
    """InvalidInput unless ``org_id`` fits ``role``: none for a platform_admin, one for an
    org_admin, either for a viewer (platform-wide or org-scoped)."""
    if role == "platform_admin" and org_id is not None:
        raise InvalidInput("a platform_admin is platform-wide: it has no org")
    if role == "org_admin" and org_id is None:
        raise InvalidInput("an org_admin needs an org")


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a role, the org it is bound to (None: platform-wide), the admin key it
    signed in with (None for the admin token or a JWT) and how it signed in."""

    role: Role
    org_id: str | None
    key_id: str | None = None
    via: Via = "admin_key"

    def __post_init__(self) -> None:
        parse_role(self.role)
        if self.via not in VIAS:
            raise InvalidInput(f"via must be one of: {', '.join(VIAS)}")
        if self.org_id is not None and (not isinstance(self.org_id, str) or not self.org_id):
            raise InvalidInput("org_id must be a non-empty string or None")
        check_scope(self.role, self.org_id)

    @property
    def platform_wide(self) -> bool:
        """Whether it reads every org (a platform_admin, a platform-wide viewer)."""
        return self.org_id is None


def can_read(principal: Principal, org_id: str | None) -> bool:
    """Whether ``principal`` may read org ``org_id``'s data (None: platform-wide data)."""
    if principal.platform_wide:
        return principal.role in ("platform_admin", "viewer")
    return org_id is not None and org_id == principal.org_id


def can_write(principal: Principal, org_id: str | None) -> bool:
    """Whether ``principal`` may change org ``org_id``'s data or settings (None: platform-wide
    settings, such as the global kill switch)."""
    if principal.role == "platform_admin":
        return True
    if principal.role == "org_admin":
        return org_id is not None and org_id == principal.org_id
    return False


def visible_orgs(principal: Principal, all_orgs: Iterable[str]) -> list[str]:
    """The org ids of ``all_orgs`` that ``principal`` may read, in their order: all of them
    for a platform-wide principal, its own org (if among them) otherwise."""
    return [org for org in all_orgs if can_read(principal, org)]
