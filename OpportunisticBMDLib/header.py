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
# Ages (years) the analysis accepts, from a user or a header: more than 0 and at most 120. Design choice: the
# oldest documented human lived 122 y, so anything above 120 is a typing or header error (e.g. '250', a
# month count read as years), and 0 or less is no age; the age picks the age-typical marrow and psoas fat
# (calibration/composition.py) and the hip Z-score row, so an impossible one would silently move vBMD.
AGE_RANGE_Y = (0.0, 120.0)


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


def plausible_age(age_y: float | None) -> bool:
    """Whether ``age_y`` lies in :data:`AGE_RANGE_Y` (more than 0, at most 120 years)."""
    low, high = AGE_RANGE_Y
    return age_y is not None and age_y == age_y and low < age_y <= high


def header_age_years(value: Any) -> float | None:
    """A header's age in years when readable and plausible (:func:`plausible_age`); an implausible one is
    ignored (None: the analysis treats the age as unknown, and pipeline.measure says so in a QC notice)."""
    age = age_years(value)
    return age if plausible_age(age) else None


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
