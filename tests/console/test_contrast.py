"""The dashboard's colours are readable: every text colour of dashboard.css on the background
it is used on has a WCAG 2 contrast ratio of at least 4.5:1 (AA for normal text); body text
at least 7:1 (AAA)."""

from __future__ import annotations

import importlib.resources
import re

import pytest

_STATIC = importlib.resources.files("costwarden") / "static"
CSS = (_STATIC / "dashboard" / "dashboard.css").read_text(encoding="utf-8")
VARS = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", CSS))


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_contrast_formula() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize(
    ("text", "background", "least"),
    [
        ("text", "bg", 7.0),
        ("text", "card", 7.0),
        ("muted", "bg", 4.5),
        ("muted", "card", 4.5),
        ("accent", "card", 4.5),  # links
        ("accent-text", "accent", 4.5),  # buttons
        ("ok", "ok-bg", 4.5),
        ("warn", "warn-bg", 4.5),
        ("bad", "bad-bg", 4.5),
        ("accent-text", "bad", 4.5),  # danger buttons
    ],
)
def test_text_is_readable_on_its_background(text: str, background: str, least: float) -> None:
    assert contrast(VARS[text], VARS[background]) >= least
