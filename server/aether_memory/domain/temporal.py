"""Dates a query names, so that "what did Maria do in May 2023?" can prefer memories of May 2023.

Only calendar dates written out are read: "October 13, 2023", "3 June, 2023", "May 2023", "in
2023", and a month alone after a preposition ("in July", "last August"). Relative words ("last
week", "yesterday") are left alone: they are relative to when the question is asked, which the
service does not know of a stored conversation. "May" counts only before a day or a year, or after
a preposition, never as the verb. Everything here is UTC and pure.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_MONTHS |= {
    name.lower(): number
    for number, name in enumerate(calendar.month_abbr)
    if name and name != "May"
} | {"sept": 9}
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"((?:19|20)\d\d)"
_PATTERNS = [
    ("mdy", re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.I)),
    ("dmy", re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.I)),
    ("my", re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.I)),
    ("m", re.compile(rf"\b(?:in|during|since|until|by|of|last|early|late|mid)\s+{_MONTH}\b", re.I)),
    ("y", re.compile(rf"\b(?:in|during|of|since)\s+{_YEAR}\b", re.I)),
]
# What a memory says about a day may be stored up to this long after it ("last week I ...").
AFTERWARDS = timedelta(days=7)


@dataclass(frozen=True)
class DateCue:
    """A span of days [start, end), or a month of any year (start and end None)."""

    start: date | None = None
    end: date | None = None
    month: int = 0

    def fits(self, when: float) -> bool:
        """Whether a memory of `when` (epoch seconds) may be about this span."""
        day = datetime.fromtimestamp(when, UTC).date()
        if self.start is not None and self.end is not None:
            return self.start <= day < self.end + AFTERWARDS
        return self.month in (day.month, (day - AFTERWARDS).month)


def date_cues(text: str) -> list[DateCue]:
    """The calendar dates `text` names, longest forms first; overlapping matches count once."""
    cues: list[DateCue] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            if any(a < match.end() and match.start() < b for a, b in taken):
                continue
            cue = _cue(kind, match.groups())
            if cue is not None:
                cues.append(cue)
                taken.append(match.span())
    return cues


def _cue(kind: str, groups: tuple[str, ...]) -> DateCue | None:
    try:
        if kind == "mdy":
            start = date(int(groups[2]), _MONTHS[groups[0].lower()], int(groups[1]))
            return DateCue(start, start + timedelta(days=1))
        if kind == "dmy":
            start = date(int(groups[2]), _MONTHS[groups[1].lower()], int(groups[0]))
            return DateCue(start, start + timedelta(days=1))
        if kind == "my":
            year, month = int(groups[1]), _MONTHS[groups[0].lower()]
            return DateCue(date(year, month, 1), date(year + month // 12, month % 12 + 1, 1))
        if kind == "m":
            return DateCue(month=_MONTHS[groups[0].lower()])
        year = int(groups[0])
        return DateCue(date(year, 1, 1), date(year + 1, 1, 1))
    except ValueError:  # "February 30, 2023"
        return None


def fits_any(cues: list[DateCue], when: float) -> bool:
    return any(cue.fits(when) for cue in cues)
