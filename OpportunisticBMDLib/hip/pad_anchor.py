"""The hip's offset anchor under an in-scan pad line.

An in-scan pad's rods lie outside the body, so its line holds at zero body offset; the body's own
offsets (cupping, scatter: -16 to +4 HU at the proximal femur on the digital patients) are unseen by it
and move the hip's aBMD ~0.27 % per HU. The hip's local check (:mod:`.local_calibration`) needs the HU
its muscle should read where the line holds. With a phantomless line that is the psoas ROI; with a pad
it is the iliopsoas of typical composition under the pad line: ICRU-44 muscle holding the age-typical
psoas fat (Sollmann et al., Quant Imaging Med Surg 2020;10(2):496-507, via
:func:`..calibration.muscle_fat_densities`) converted to HU with the pad's own line. The patient's own
psoas fat (between-subject SD 1.5-2.9 %, same source) is this anchor's error: ~4 HU, i.e. ~1 % of the
hip's aBMD (1 SD), added to the pad line's stated uncertainty.

Measured end to end (``obmd bench hip --calibration inscan``, realistic digital patients with a pad,
mean / max |error| %): seeds 500-502 neck -0.76 / 1.35, total hip -0.75 / 1.69 with the anchor (the pad
line unshifted: -2.81 / 4.86 and -2.91 / 5.25); seeds 600-605 neck -0.14 / 1.94, total hip +0.04 / 1.47.
"""

from __future__ import annotations

import math
from typing import Any

from ..calibration.composition import (
    REFERENCE_KVP,
    REFERENCE_MARROW_FAT_FRACTION,
    muscle_fat_densities,
    psoas_fat_sd,
    typical_psoas_fat_fraction,
)
from ..calibration.registry import LINE_FROM_PAD, methods_with_line_from

PAD_METHODS = methods_with_line_from(LINE_FROM_PAD)
# Hip aBMD change per HU of offset at the femur: 0.23-0.29 %/HU (neck and total hip, seeds 501-502,
# from the aBMD with and without the local shift of 9.6-15.9 HU).
HIP_ABMD_PERCENT_PER_HU = 0.27


def pad_muscle_reference(details: dict[str, Any], slope_mg_cm3_per_hu: float, intercept_mg_cm3: float,
                         age_years: float | None, psoas_fat_fraction: float | None = None) -> dict[str, Any]:
    """The HU the iliopsoas reads under the pad line (the local check's reference) and its SD: of typical
    composition, or holding ``psoas_fat_fraction`` when the user knows it (``obmd analyze --psoas-fat``,
    e.g. from a water-fat MRI); the composition SD is then not estimated (0: the user's own error is
    unknown here)."""
    kvp = float(details.get("kvp") or REFERENCE_KVP)
    marrow_fat = round(float(details.get("base_marrow_fat_fraction") or REFERENCE_MARROW_FAT_FRACTION), 3)
    user = psoas_fat_fraction is not None
    psoas_fat = float(psoas_fat_fraction) if user else typical_psoas_fat_fraction(age_years)
    psoas_mg_cm3 = muscle_fat_densities(kvp, marrow_fat, psoas_fat)[0]
    lean_mg_cm3, adipose_mg_cm3 = muscle_fat_densities(kvp, marrow_fat, 0.0)
    sd_hu = 0.0 if user else psoas_fat_sd(age_years) * (lean_mg_cm3 - adipose_mg_cm3) / slope_mg_cm3_per_hu
    which = "the user's psoas fat" if user else "the age-typical psoas fat, Sollmann et al. 2020"
    return {"muscle_hu": (psoas_mg_cm3 - intercept_mg_cm3) / slope_mg_cm3_per_hu,
            "muscle_hu_sd": round(sd_hu, 2), "psoas_fat_fraction": psoas_fat,
            "psoas_fat_source": "user" if user else "age-typical",
            "site": f"the iliopsoas under the in-scan pad line (ICRU-44 muscle with {which}): the body's "
                    "offset at the hip, which the pad outside the body does not see"}


def hip_relative_sd(line_relative_sd: float | None, *offset_hu_sds: float) -> float:
    """1 SD (relative) of the hip's aBMD: the line's own and, in quadrature, composition errors that act as
    an HU offset at the femur (the anchor muscle's fat, the marrow's fat), at :data:`HIP_ABMD_PERCENT_PER_HU`."""
    terms = [line_relative_sd or 0.0] + [sd * HIP_ABMD_PERCENT_PER_HU / 100.0 for sd in offset_hu_sds]
    return math.hypot(*terms)
