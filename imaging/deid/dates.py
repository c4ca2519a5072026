"""Whole-day shifts of DA and DT values, keeping precision, time of day and timezone offset."""

from __future__ import annotations

import datetime as dt
import re

# DT: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]; everything after the date part is kept verbatim.
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$", re.DOTALL)


def _shift_date_part(year: str, month: str | None, day: str | None, days: int) -> str | None:
    try:
        if day is not None and month is not None:
            shifted = dt.date(int(year), int(month), int(day)) + dt.timedelta(days=days)
            return shifted.strftime("%Y%m%d")
        # Reduced precision: shift the middle of the period and keep the same precision.
        if month is not None:
            shifted = dt.date(int(year), int(month), 15) + dt.timedelta(days=days)
            return shifted.strftime("%Y%m")
        shifted = dt.date(int(year), 7, 1) + dt.timedelta(days=days)
        return shifted.strftime("%Y")
    except (ValueError, OverflowError):
        return None


def shift_dt(value: str, days: int) -> str | None:
    """Shift one DT (or DA) value by `days`; None when it is not a parseable date (caller removes it)."""
    text = value.strip()
    if not text:
        return ""
    match = _DT.match(text)
    if match is None:
        return None
    year, month, day, rest = match.groups()
    if rest and not re.fullmatch(r"[\d.]*([+-]\d{4})?", rest):
        return None
    shifted = _shift_date_part(year, month, day, days)
    return None if shifted is None else shifted + rest


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (also a DA range 'A-B' as found in queries)."""
    text = value.strip()
    if "-" in text:
        parts = [shift_dt(p, days) if p else "" for p in text.split("-", 1)]
        return None if any(p is None for p in parts) else "-".join(p or "" for p in parts)
    if "." in text:  # ACR-NEMA 'YYYY.MM.DD'
        text = text.replace(".", "")
    if text and not text.isdigit():
        return None
    return shift_dt(text, days)
