"""``costwarden keys create --honeypot [--honeypot-action ...]`` and ``keys list``: a honeypot
key made like any other, listed (table and JSON) with the others but marked; bad input one
clear error line, nothing created."""

from __future__ import annotations

import re
from pathlib import Path

from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from tests.helpers import ainvoke_cli, assert_clean_error


def _keys(config: str) -> list[str]:
    engine = create_engine_for(f"sqlite:///{Path(config).parent}/cw.db")
    try:
        return [k.id for k in repo.list_keys(engine)]
    finally:
        engine.dispose()


async def test_keys_create_honeypot_and_list(config: str) -> None:
    create = ("keys", "create", "--config", config, "--org", "acme")
    plain = (await ainvoke_cli(*create, "--json")).json()
    trap = (await ainvoke_cli(*create, "--name", "wiki", "--honeypot", "--json")).json()
    fuse = (
        await ainvoke_cli(*create, "--honeypot", "--honeypot-action", "switch_off_org", "--json")
    ).json()
    assert (plain["honeypot"], plain["honeypot_action"]) == (False, None)
    assert (trap["honeypot"], trap["honeypot_action"]) == (True, "alert")
    assert (fuse["honeypot"], fuse["honeypot_action"]) == (True, "switch_off_org")
    assert len({len(k["key"]) for k in (plain, trap, fuse)}) == 1
    assert all(k["key"].startswith("cw-") and k["prefix"] == k["key"][:10] for k in (trap, fuse))

    human = await ainvoke_cli(*create, "--honeypot")
    assert human.code == 0, human.err
    assert "created honeypot key key_" in human.out and "action: alert" in human.out
    assert len(re.findall(r"^cw-\S+$", human.out, flags=re.M)) == 1

    listed = (await ainvoke_cli("keys", "list", "--config", config, "--json")).json()["data"]
    by_id = {k["id"]: k for k in listed}
    assert by_id[trap["id"]]["honeypot"] is True
    assert by_id[fuse["id"]]["honeypot_action"] == "switch_off_org"
    assert by_id[plain["id"]]["honeypot"] is False
    table = await ainvoke_cli("keys", "list", "--config", config)
    assert table.code == 0, table.err
    assert "honeypot" in table.out
    rows = {
        found: line
        for line in table.out.splitlines()
        for found in re.findall(r"key_[0-9a-f]{12}", line)
    }
    assert "switch_off_org" in rows[fuse["id"]] and "alert" in rows[trap["id"]]
    assert "alert" not in rows[plain["id"]]
    for made in (trap, fuse):
        assert made["key"] not in table.out and made["key"] not in str(listed)


async def test_bad_honeypot_options_are_one_line_errors_and_create_nothing(
    config: str,
) -> None:
    create = ("keys", "create", "--config", config, "--org", "acme")
    before = _keys(config)
    assert_clean_error(
        await ainvoke_cli(*create, "--honeypot", "--honeypot-action", "nuke"),
        "honeypot_action must be one of: alert, switch_off_org",
    )
    assert_clean_error(
        await ainvoke_cli(*create, "--honeypot-action", "switch_off_org"),
        "honeypot_action is for honeypot keys only",
    )
    assert _keys(config) == before
