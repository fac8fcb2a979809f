"""T-scores and WHO categories for hip areal BMD.

Reference: NHANES III, non-Hispanic White women aged 20-29 years, measured with Hologic QDR-1000
pencil-beam DXA: Looker AC, Wahner HW, Dunn WL, et al. Updated data on proximal femur bone mineral
levels of US adults. Osteoporos Int 1998;8(5):468-489, doi:10.1007/s001980050093. The ISCD (2019
and 2023 official positions) recommends this White female young-adult reference for the T-scores of
all patients, and accepts femoral neck and total hip T-scores from 2D projections of QCT data
(CTXA) for diagnosis with the WHO criteria.

Young-adult means and SDs used (g/cm^2): femoral neck 0.858 +- 0.120, total hip 0.942 +- 0.122.
These are the values widely used from Looker 1998 (the femoral-neck pair is also the WHO/IOF
reference standard of Kanis et al., Bone 2008;42:467-475); the original table could not be read
back here, so they are quoted, as in the project's references notes, not re-derived.

Assumption: our aBMD is hydroxyapatite mass per projected area from a calibrated QCT density map,
which (like CTXA) is taken to be on the Hologic scale the NHANES III data were measured on; no
cross-calibration to Lunar/GE is applied.

Z-scores: (aBMD - age/sex-matched mean) / matched SD (ISCD). They need an age-, sex- (and, ISCD:
ethnicity-) matched reference table, e.g. Looker 1998's NHANES III tables by age decade (its Table 2
for non-Hispanic Whites by sex and age) or the DXA manufacturer's. Only rows verified here are
built in (:data:`AGE_REFERENCE_BUILTIN`): the age-decade means of Looker 1998 beyond the 20-29 y row
could not be read back from the paper in this project, so they are NOT typed in from memory. A site
supplies its own table as JSON (:func:`load_age_reference`; ``obmd analyze --z-reference FILE``);
where no row matches the patient's age and sex the Z-score is None and ``z_score_note`` says why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

NHANES3_WHITE_FEMALE_YOUNG: dict[str, tuple[float, float]] = {
    # region: (mean g/cm^2, SD g/cm^2); Looker et al. 1998 (see module docstring)
    "neck": (0.858, 0.120),
    "total_hip": (0.942, 0.122),
}
REFERENCE_NAME = "NHANES III White female, 20-29 y (Looker et al., Osteoporos Int 1998;8:468-489)"
# Age/sex reference rows for Z-scores (same keys as a --z-reference JSON file). Built in: only the
# NHANES III White women 20-29 y row, the young-adult pair quoted above (Looker et al., Osteoporos Int
# 1998;8:468-489); the other age decades of that paper are not built in (not verified here).
AGE_REFERENCE_BUILTIN: dict[str, Any] = {
    "name": "NHANES III non-Hispanic White women 20-29 y only (Looker et al., Osteoporos Int 1998;8:468-489)",
    "rows": [{"sex": "F", "region": region, "age_min": 20.0, "age_max": 30.0, "mean_g_cm2": mean, "sd_g_cm2": sd}
             for region, (mean, sd) in NHANES3_WHITE_FEMALE_YOUNG.items()],
}
Z_SCORE_UNAVAILABLE = (
    "Z-score not reported: no age/sex-matched reference row for this patient (built in: NHANES III White women "
    "20-29 y only; give a table with --z-reference)"
)

# WHO criteria (WHO Technical Report Series 843, 1994; ISCD): T <= -2.5 osteoporosis,
# -2.5 < T < -1 osteopenia (low bone mass), T >= -1 normal.
OSTEOPOROSIS_T = -2.5
OSTEOPENIA_T = -1.0


def t_score(abmd_g_cm2: float, region: str) -> float | None:
    """(aBMD - young mean) / young SD; None for regions without a reference (trochanter, ...)."""
    ref = NHANES3_WHITE_FEMALE_YOUNG.get(region)
    if ref is None or abmd_g_cm2 is None or not math.isfinite(abmd_g_cm2):
        return None
    mean, sd = ref
    return (abmd_g_cm2 - mean) / sd


def abmd_at_t(t: float, region: str) -> float:
    """aBMD (g/cm^2) at T-score ``t`` (for drawing the reference bands)."""
    mean, sd = NHANES3_WHITE_FEMALE_YOUNG[region]
    return mean + t * sd


def who_category(t: float | None) -> str | None:
    if t is None or not math.isfinite(t):
        return None
    if t <= OSTEOPOROSIS_T:
        return "osteoporosis"
    if t < OSTEOPENIA_T:
        return "osteopenia"
    return "normal"


def hip_category(t_scores: dict[str, float | None]) -> str | None:
    """WHO category from the lowest of the femoral neck and total hip T-scores (ISCD)."""
    values = [t for k, t in t_scores.items() if k in NHANES3_WHITE_FEMALE_YOUNG and t is not None]
    return who_category(min(values)) if values else None


def _sex(value: Any) -> str | None:
    text = str(value or "").strip().upper()
    return {"F": "F", "FEMALE": "F", "W": "F", "M": "M", "MALE": "M"}.get(text)


def load_age_reference(path: str | Path) -> dict[str, Any]:
    """A Z-score reference table from JSON: ``{"name": str, "rows": [{"sex": "F"|"M", "region": "neck"|
    "total_hip"|..., "age_min": years, "age_max": years (exclusive), "mean_g_cm2", "sd_g_cm2"}]}``.
    Raises ValueError on a malformed table (a wrong table must not give silent Z-scores)."""
    data = json.loads(Path(path).read_text())
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: a Z-score reference needs a non-empty 'rows' list")
    for i, row in enumerate(rows):
        try:
            ok = (_sex(row["sex"]) is not None and float(row["age_max"]) > float(row["age_min"])
                  and float(row["sd_g_cm2"]) > 0 and float(row["mean_g_cm2"]) > 0 and str(row["region"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {i}: {exc!r}") from exc
        if not ok:
            raise ValueError(f"{path}: row {i}: sex F/M, age_min < age_max, positive mean and SD needed")
    return {"name": str(data.get("name") or Path(path).name), "rows": rows}


def age_matched(region: str, age: float | None, sex: Any, table: dict[str, Any] | None = None
                ) -> tuple[float, float] | None:
    """(mean, SD) g/cm^2 of the row matching ``region``, ``sex`` and ``age_min <= age < age_max``."""
    sex = _sex(sex)
    if age is None or sex is None or not math.isfinite(float(age)):
        return None
    for row in (table or AGE_REFERENCE_BUILTIN)["rows"]:
        if (row["region"] == region and _sex(row["sex"]) == sex
                and float(row["age_min"]) <= float(age) < float(row["age_max"])):
            return float(row["mean_g_cm2"]), float(row["sd_g_cm2"])
    return None


def z_score(abmd_g_cm2: float | None, region: str, age: float | None, sex: Any,
            table: dict[str, Any] | None = None) -> tuple[float | None, str]:
    """(Z, note): Z = (aBMD - age/sex-matched mean) / matched SD, None with the reason when age, sex or a
    matching reference row is missing. ``abmd_g_cm2`` None returns only the note (for the side)."""
    name = (table or AGE_REFERENCE_BUILTIN)["name"]
    if age is None or _sex(sex) is None:
        return None, "Z-score not reported: patient age and sex needed (DICOM header or --age/--sex)"
    ref = age_matched(region, age, sex, table)
    if ref is None:
        return None, f"{Z_SCORE_UNAVAILABLE}; table: {name}"
    note = f"Z-score against {name}, {_sex(sex)} aged {float(age):.0f}"
    if abmd_g_cm2 is None or not math.isfinite(abmd_g_cm2):
        return None, note
    mean, sd = ref
    return (abmd_g_cm2 - mean) / sd, note
