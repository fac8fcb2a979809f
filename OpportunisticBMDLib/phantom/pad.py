"""In-scan calibration pad (``PhantomOptions.calibration_pad``): a solid water-equivalent block lying on the
table under the patient's back, holding cylindrical hydroxyapatite rods along z, scanned with the patient.

The design is ours, modelled on the commercial QCT pads (Mindways, QRM) in layout only: a flat block, a
row of rods of known HA density in a water-equivalent resin across x under the body, spanning the whole
scan length. No manufacturer's densities or dimensions are claimed. The HU come from the same physics as
the patient (HA volume fraction in water, the patient's beam: :func:`.esp.ha_in_water_hu`). The pad is
labelled ``table`` (outside the body: no body offset field, like the table; noise, blur and quantisation
as everything else). Its HA is not painted into the density map (that map holds the patient's bone).
"""

from __future__ import annotations

import numpy as np

from ..labels import LABELS
from .context import Ctx
from .esp import ha_in_water_hu
from .layout import Y_BACK_MM

PAD_THICKNESS_MM = 30.0
PAD_HALF_WIDTH_MM = 170.0
PAD_GAP_MM = 1.0  # between the patient's back and the pad's top (the patient lies on it)
PAD_ROD_MG_CM3 = (50.0, 100.0, 150.0, 200.0)  # our design; the base itself is the 0 mg/cm3 point
PAD_ROD_RADIUS_MM = 6.0
PAD_ROD_SPACING_MM = 60.0  # centre to centre across x, centred under the spine


def pad_top_y_mm() -> float:
    return Y_BACK_MM + PAD_GAP_MM


def table_shift_mm(with_pad: bool) -> float:
    """How far the table moves down (posterior, +y) to make room for the pad."""
    return PAD_GAP_MM + PAD_THICKNESS_MM if with_pad else 0.0


def rod_centres_xy_mm() -> list[tuple[float, float]]:
    n = len(PAD_ROD_MG_CM3)
    y = pad_top_y_mm() + PAD_THICKNESS_MM / 2
    return [((i - (n - 1) / 2) * PAD_ROD_SPACING_MM, y) for i in range(n)]


def paint_calibration_pad(ctx: Ctx) -> dict:
    """Paint the pad (base and rods, whole z range) and return its truth record."""
    g, beam = ctx.grid, ctx.tissues.beam
    y0 = pad_top_y_mm()
    box = g.box((-PAD_HALF_WIDTH_MM - 5, y0 - 5, -1e4), (PAD_HALF_WIDTH_MM + 5, y0 + PAD_THICKNESS_MM + 5, 1e4))
    rods = []
    if box is not None:
        slab = np.maximum(np.abs(box.x) - PAD_HALF_WIDTH_MM,
                          np.maximum(y0 - box.y, box.y - (y0 + PAD_THICKNESS_MM)))
        ctx.canvas.paint_sdf(box, np.broadcast_to(slab, box.shape), ha_in_water_hu(0.0, beam), LABELS["table"])
    for ha, (x, y) in zip(PAD_ROD_MG_CM3, rod_centres_xy_mm(), strict=True):
        rod_box = g.box((x - PAD_ROD_RADIUS_MM - 4, y - PAD_ROD_RADIUS_MM - 4, -1e4),
                        (x + PAD_ROD_RADIUS_MM + 4, y + PAD_ROD_RADIUS_MM + 4, 1e4))
        if rod_box is not None:
            d = np.sqrt((rod_box.x - x) ** 2 + (rod_box.y - y) ** 2) - PAD_ROD_RADIUS_MM
            ctx.canvas.paint_sdf(rod_box, np.broadcast_to(d, rod_box.shape), ha_in_water_hu(ha, beam), LABELS["table"])
        rods.append({"ha_mg_cm3": ha, "center_xy_lps_mm": [round(x, 3), round(y, 3)], "radius_mm": PAD_ROD_RADIUS_MM,
                     "hu_ideal": round(ha_in_water_hu(ha, beam), 3)})
    return {"design": "water-equivalent base with HA rods along z (ours, modelled on QRM/Mindways pads)",
            "base_mg_cm3": 0.0, "base_hu_ideal": round(ha_in_water_hu(0.0, beam), 3),
            "thickness_mm": PAD_THICKNESS_MM, "half_width_mm": PAD_HALF_WIDTH_MM,
            "top_y_lps_mm": round(y0, 3), "rods": rods, "label": "table"}
