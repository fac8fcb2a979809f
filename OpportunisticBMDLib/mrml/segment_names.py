"""What a segment is called and how it looks: display names, colors and DICOM (SNOMED CT) terminology of
our labels and ROIs, and the way back from a name or a terminology to our label id. No slicer import:
the browser page colors its lists with :func:`color_for` too."""

from __future__ import annotations

import re

import numpy as np

from ..labels import LABELS, TOTALSEG_TO_OURS

# Display colors (RGB 0-1): bone like Slicer's "bone", muscle red, fat yellow, organs by habit.
_COLOR_BY_PREFIX = {
    "vertebra": (0.95, 0.84, 0.57), "sacrum": (0.86, 0.75, 0.50), "rib": (0.99, 0.91, 0.62),
    "intervertebral_disc": (0.74, 0.86, 0.93), "femur": (0.90, 0.80, 0.55), "hip": (0.82, 0.72, 0.48),
    "psoas": (0.75, 0.33, 0.28), "paraspinal": (0.65, 0.28, 0.25), "other_muscle": (0.55, 0.25, 0.22),
    "subcutaneous_fat": (0.98, 0.90, 0.35), "visceral_fat": (0.93, 0.80, 0.25), "body": (0.85, 0.70, 0.65),
    "aorta": (0.85, 0.10, 0.10), "inferior_vena_cava": (0.20, 0.35, 0.85), "liver": (0.55, 0.25, 0.15),
    "spleen": (0.60, 0.30, 0.50), "kidney": (0.70, 0.45, 0.35), "bowel": (0.80, 0.60, 0.45),
    "metal": (0.50, 0.50, 0.55), "table": (0.30, 0.30, 0.30),
    "trabecular": (0.10, 0.70, 0.95), "muscle_roi": (0.95, 0.20, 0.55), "fat_roi": (1.00, 0.60, 0.00),
}

# SNOMED CT codes (type, modifier) as SlicerTotalSegmentator maps TotalSegmentator classes
# (lassoan/SlicerTotalSegmentator, TotalSegmentator/Resources/totalsegmentator_snomed_mapping.csv).
_SCT = {
    "vertebra_T10": ("7610001", "T10 vertebra"), "vertebra_T11": ("12989004", "T11 vertebra"),
    "vertebra_T12": ("23215003", "T12 vertebra"), "vertebra_L1": ("66794005", "L1 vertebra"),
    "vertebra_L2": ("14293000", "L2 vertebra"), "vertebra_L3": ("36470004", "L3 vertebra"),
    "vertebra_L4": ("11994002", "L4 vertebra"), "vertebra_L5": ("49668003", "L5 vertebra"),
    "sacrum": ("54735007", "Sacrum"), "femur": ("71341001", "Femur"), "hip": ("29836001", "Hip"),
    "psoas": ("68455001", "Iliopsoas muscle"), "paraspinal": ("244849004", "Deep muscle of back"),
    "aorta": ("15825003", "Aorta"), "inferior_vena_cava": ("64131007", "Inferior vena cava"),
    "liver": ("10200004", "Liver"), "spleen": ("78961009", "Spleen"), "kidney": ("64033007", "Kidney"),
    "subcutaneous_fat": ("67769002", "Subcutaneous fatty tissue"), "other_muscle": ("127954009", "Skeletal muscle"),
}
_SIDE = {"left": "SCT^7771000^Left", "right": "SCT^24028007^Right"}


# ROI key -> the label whose terminology describes the tissue it samples.
ROI_TERMINOLOGY = {"muscle_roi": "psoas", "fat_roi": "subcutaneous_fat"}


def roi_display_name(key: str) -> str:
    """Segment name shown to users for a ROI key of ``AnalysisResult.rois``."""
    if key.startswith("trabecular_"):
        return f"Trabecular ROI {key.split('_', 1)[1]}"
    fixed = {"muscle_roi": "Muscle ROI (psoas)", "fat_roi": "Fat ROI (subcutaneous)"}
    if key in fixed:
        return fixed[key]
    hip = re.fullmatch(r"hip_(\w+)_roi_(left|right)", key)
    if hip:  # e.g. hip_neck_roi_right -> "Hip neck ROI (right)"
        return f"Hip {hip.group(1).replace('_', ' ')} ROI ({hip.group(2)})"
    return key.replace("_", " ").capitalize()


def label_display_name(name: str) -> str:
    """Segment name for a label of our schema (``vertebra_L1`` -> ``L1 vertebra``)."""
    if name.startswith("vertebra_"):
        return f"{name.split('_', 1)[1]} vertebra"
    return name.replace("_", " ")


def color_for(key: str) -> tuple[float, float, float]:
    if key.startswith("hip_") and "_roi_" in key:
        return (1.0, 0.84, 0.04)  # hip ROIs drawn like the DXA-like report's regions
    for prefix, color in _COLOR_BY_PREFIX.items():
        if key.startswith(prefix):
            return color
    rng = np.random.default_rng(abs(hash(key)) % 2**32)  # stable within a run; unknown keys only
    return tuple(float(c) for c in rng.uniform(0.3, 0.9, 3))  # type: ignore[return-value]


def terminology_entry(name: str) -> str | None:
    """Slicer terminology string for our label ``name`` where a SNOMED code is known."""
    side = ""
    base = name
    for s in ("_left", "_right"):
        if name.endswith(s):
            base, side = name[: -len(s)], _SIDE[s[1:]]
    code = _SCT.get(base)
    if code is None:
        return None
    category = "SCT^85756007^Tissue" if base == "subcutaneous_fat" else "SCT^123037004^Anatomical Structure"
    return (
        f"Segmentation category and type - OpportunisticBMD~{category}~SCT^{code[0]}^{code[1]}~{side or '^^'}"
        "~Anatomic codes - DICOM master list~^^~^^"
    )


def label_id_of_name(name: str) -> int | None:
    """Our label id for a segment named in our schema, TotalSegmentator's (``vertebrae_L1``) or as we
    display it (``L1 vertebra``)."""
    if name in LABELS:
        return LABELS[name]
    if name in TOTALSEG_TO_OURS:
        return LABELS[TOTALSEG_TO_OURS[name]]
    return _DISPLAY_TO_LABEL.get(name.strip().lower())


_DISPLAY_TO_LABEL = {label_display_name(name).lower(): label_id for name, label_id in LABELS.items() if label_id}


def label_id_of_terminology(entry: str | None) -> int | None:
    """Our label id from a segment's DICOM terminology (SNOMED CT type and left/right modifier), as
    SlicerTotalSegmentator and other tools tag their segments."""
    if not entry:
        return None
    fields = entry.split("~")
    if len(fields) < 4:
        return None
    type_code = fields[2].split("^")[1] if fields[2].count("^") >= 2 else ""
    modifier_code = fields[3].split("^")[1] if fields[3].count("^") >= 2 else ""
    side = {"7771000": "_left", "24028007": "_right"}.get(modifier_code, "")
    for base, (code, _meaning) in _SCT.items():
        if code == type_code and f"{base}{side}" in LABELS:
            return LABELS[f"{base}{side}"]
    return None

