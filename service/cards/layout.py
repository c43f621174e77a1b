"""The compact card layout shared by every card: strength tags, one-line items, numbered references,
times with their zone, and a summary cut to the CDS Hooks limit.

Cards are read in seconds in an EHR side panel: what the patient needs first, one line per item,
each line ending in its strength and the number of its source; the sources are listed once, at the
end, numbered in order of first use (their links are the card's `links`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo

from cds_hooks.models import Link

STRENGTH_LEGEND = {
    "G": "G guideline",
    "P": "P author suggestion",
    "X": "X extrapolated, local protocol",
}
SUMMARY_MAX = 139  # CDS Hooks: summary < 140 characters


class References:
    """Sources numbered in order of first use: (short label, url) → 1, 2, ..."""

    def __init__(self) -> None:
        self._numbers: dict[tuple[str, str], int] = {}

    def number(self, label: str, url: str) -> int:
        return self._numbers.setdefault((label, url), len(self._numbers) + 1)

    def line(self) -> str:
        """One line at the end of the detail: "Sources: [1] ICAHT 2023 · [2] ..." (links below)."""
        if not self._numbers:
            return ""
        refs = " · ".join(f"[{n}] {label}" for (label, _), n in self._numbers.items())
        return f"Sources: {refs}."

    def links(self) -> list[Link]:
        return [Link(label=f"[{n}] {label}", url=url, type="absolute") for (label, url), n in self._numbers.items()]


def tag(strength: str, ref: int) -> str:
    """An item's strength and source in five characters: "G [1]"."""
    return f"{strength} [{ref}]"


def item_line(
    text: str, strength: str, ref: int, note: str | None = None, also: Iterable[tuple[str, str, int]] = ()
) -> str:
    """One list item: its text, then strength and source (and those of a part a second source backs:
    "P [4]; timing G [3]"), then what the chart says (e.g. on order)."""
    tags = "; ".join([tag(strength, ref), *(f"{part} {tag(s, n)}" for part, s, n in also)])
    return f"- {text} · {tags}" + (f" — {note}" if note else "")


def legend(strengths: Iterable[str]) -> str:
    used = [s for s in STRENGTH_LEGEND if s in set(strengths)]
    return " · ".join(STRENGTH_LEGEND[s] for s in used) + "." if used else ""


def local_time(dt: datetime, tz: tzinfo, *, date_only: bool = False) -> str:
    """A time as the clinician reads it: the facility's zone, named ("2024-03-09 10:00 CET").

    A date-only value has no time and no zone to show."""
    if date_only:
        return dt.strftime("%Y-%m-%d")
    local = dt.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or local.strftime('%z')}"


def fit_summary(head: str, parts: Iterable[str], sep: str = ", ") -> str:
    """`head` then as many of `parts` as fit the summary limit, whole parts only."""
    text = head
    for i, part in enumerate(parts):
        more = (sep if i else "") + part
        if len(text) + len(more) > SUMMARY_MAX:
            break
        text += more
    return text[:SUMMARY_MAX]
