"""Scan header values (DICOM tags, a JSON sidecar, an MRML node's attributes) read as typed facts.

Stdlib only: :mod:`.settings` resolves the analysis' header defaults (age, sex, kVp) with these, and
:mod:`.io` reads the headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# where a tube potential may sit in a header: io.read_ct's name, the DICOM keyword, the tag
KVP_KEYS = ("kvp", "KVP", "0018|0060")


def age_years(value: Any) -> float | None:
    """Age in years from a number or a DICOM Age String ('055Y', '006M', '010W', '003D'); None if unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"\s*(\d{1,3})\s*([YMWD]?)\s*", str(value).upper())
    if not match:
        return None
    n, unit = float(match.group(1)), match.group(2) or "Y"
    return n / {"Y": 1.0, "M": 12.0, "W": 52.18, "D": 365.25}[unit]


def sex_code(value: Any) -> str | None:
    """'F' or 'M' from a DICOM PatientSex (or a user's entry); None otherwise ('O', blank)."""
    code = str(value or "").strip().upper()[:1]
    return code if code in ("F", "M") else None


def kvp_from(header: Mapping[str, Any]) -> float | None:
    """Tube potential (kV) from a header, if it holds a readable one."""
    for key in KVP_KEYS:
        value = header.get(key)
        if value not in (None, ""):
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
    return None
