"""Who and what was scanned, as the CT's header says it (results.json ``input.identification``).

Only what the reader found: DICOM tags, a JSON sidecar beside a NIfTI/NRRD/MHA file (io.SIDECAR_KEYWORDS),
or the header attributes of a Slicer volume node. A field the header lacks (or leaves blank) is ``None``;
nothing is guessed (a NIfTI without a sidecar identifies nothing).
"""

from __future__ import annotations

import re
from typing import Any

from ..header import age_years, sex_code

# identification key -> Volume.metadata key (io.HEADER_KEYS), in the order the report lists them
FIELDS = {
    "patient_id": "patient_id",
    "patient_age": "patient_age",
    "patient_sex": "patient_sex",
    "study_date": "study_date",
    "manufacturer": "manufacturer",
    "manufacturer_model_name": "manufacturer_model_name",
    "kvp": "kvp",
    "series_description": "series_description",
    "slice_thickness_mm": "slice_thickness_mm",
}
NUMBERS = ("kvp", "slice_thickness_mm")


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _number(value: Any) -> float | None:
    try:
        number = float(str(value).split("\\")[0])  # a multi-valued DICOM string: its first value
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN: not recorded


def _date(value: Any) -> str | None:
    """DICOM DA (YYYYMMDD) as ISO 8601; any other text as it is."""
    text = _text(value)
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text or "")
    return f"{match.group(1)}-{match.group(2)}-{match.group(3)}" if match else text


def header_source(metadata: dict[str, Any]) -> str | None:
    """Where the header fields came from: ``dicom``, ``sidecar`` or ``volume node``; None when none was read."""
    if metadata.get("format") == "dicom":
        return "dicom"
    if metadata.get("header_source"):
        return "sidecar"
    return "volume node" if any(_text(metadata.get(key)) for key in FIELDS.values()) else None


def identification(metadata: dict[str, Any]) -> dict[str, Any]:
    """The identification block from a CT's ``Volume.metadata``: every field of :data:`FIELDS` (``None``
    when not recorded), ``patient_age_years`` read from the DICOM age string, and ``source``."""
    out: dict[str, Any] = {}
    for key, meta_key in FIELDS.items():
        value = metadata.get(meta_key)
        out[key] = _number(value) if key in NUMBERS else _text(value)
    out["study_date"] = _date(out["study_date"])
    out["patient_sex"] = sex_code(out["patient_sex"]) or out["patient_sex"]  # 'O' stays as the header says
    out["patient_age_years"] = age_years(out["patient_age"])
    out["source"] = header_source(metadata)
    return out
