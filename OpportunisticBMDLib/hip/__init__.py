"""Hip: CTXA-like areal BMD (g/cm^2 hydroxyapatite) of the proximal femur from CT.

For each femur in view (our labels femur_left 20 / femur_right 21): exclusion for metal, the
calibrated density map (the spine's :class:`Calibration`), femoral head / neck / shaft axes
(:mod:`.geometry`), DXA positioning and anterior-posterior projection (:mod:`.projection`),
Hologic-style regions in mm (:mod:`.regions`), T-scores and WHO category (:mod:`.tscores`),
DXA-like report pictures (:mod:`.pictures`) and phantom truth (:mod:`.truth`).

``analyze_hips(ct, labels, calibration, hip_options) -> (results, rois, pictures)`` with
``results = {"left"|"right": {"neck"|"trochanter"|"intertrochanter"|"total_hip": {abmd_g_cm2,
area_cm2, bmc_g, t_score}, "category", "neck_axis_angle_deg", "neck_shaft_angle_deg",
"excluded_reason", "qc": [...]}}``.
"""

from .analysis import HipOptions, HipPicture, analyze_hips

__all__ = ["HipOptions", "HipPicture", "analyze_hips"]
