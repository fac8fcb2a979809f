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

Z-scores need age-, sex- and ethnicity-matched means (Looker 1998 tables by age decade). Those
tables could not be verified here, so Z-scores are not reported (``Z_SCORE_UNAVAILABLE``).
"""

from __future__ import annotations

import math

NHANES3_WHITE_FEMALE_YOUNG: dict[str, tuple[float, float]] = {
    # region: (mean g/cm^2, SD g/cm^2); Looker et al. 1998 (see module docstring)
    "neck": (0.858, 0.120),
    "total_hip": (0.942, 0.122),
}
REFERENCE_NAME = "NHANES III White female, 20-29 y (Looker et al., Osteoporos Int 1998;8:468-489)"
Z_SCORE_UNAVAILABLE = (
    "Z-score not reported: the age/sex-matched NHANES III table (Looker 1998) could not be verified; "
    "T-scores use the ISCD White female young-adult reference"
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
