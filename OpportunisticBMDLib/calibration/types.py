"""The :class:`Calibration` a method returns: a line HU -> mg/cm3 hydroxyapatite and what it rests on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Calibration:
    """mg/cm3 = intercept + slope * HU; slope None means "no calibration" (HU only)."""

    method: str
    slope_mg_cm3_per_hu: float | None
    intercept_mg_cm3: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_mg_cm3(self, hu: float | np.ndarray | None) -> float | np.ndarray | None:
        if hu is None or self.slope_mg_cm3_per_hu is None or self.intercept_mg_cm3 is None:
            return None
        return self.intercept_mg_cm3 + self.slope_mg_cm3_per_hu * hu

    @property
    def calibrated(self) -> bool:
        return self.slope_mg_cm3_per_hu is not None

    @property
    def slope_relative_sd(self) -> float | None:
        """The line's stated 1 SD of its slope (relative), None when it states none."""
        return self.details.get("slope_relative_sd")

    def as_dict(self) -> dict[str, Any]:
        """The ``calibration`` block of results.json (method-specific keys come from ``details``)."""
        out: dict[str, Any] = {
            "method": self.method,
            "slope": self.slope_mg_cm3_per_hu,
            "intercept": self.intercept_mg_cm3,
            "muscle_hu": None,
            "fat_hu": None,
            "muscle_density_mg_cm3": None,
            "fat_density_mg_cm3": None,
        }
        for key in ("muscle_hu", "fat_hu", "muscle_density_mg_cm3", "fat_density_mg_cm3", "note", "source_file"):
            if key in self.details:
                out[key] = self.details[key]
        out["details"] = {k: v for k, v in self.details.items() if k not in out}
        return out
