"""The OpportunisticBMD label schema and the mapping from TotalSegmentator's ``total`` task.

Our label map is one integer image on the CT grid. Ids are stable: they are the contract between
the phantom generator, the models, the measurements, the Slicer segments and exported training
data (nnU-Net ``dataset.json`` uses :data:`LABELS` as its ``labels`` table).
"""

from __future__ import annotations

import numpy as np

VERTEBRA_LEVELS: tuple[str, ...] = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
MEASURED_LEVELS: tuple[str, ...] = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")

LABELS: dict[str, int] = {
    "background": 0,
    "vertebra_T10": 1,
    "vertebra_T11": 2,
    "vertebra_T12": 3,
    "vertebra_L1": 4,
    "vertebra_L2": 5,
    "vertebra_L3": 6,
    "vertebra_L4": 7,
    "vertebra_L5": 8,
    "sacrum": 9,
    "rib_left_11": 10,
    "rib_right_11": 11,
    "rib_left_12": 12,
    "rib_right_12": 13,
    "ribs_other": 14,
    "intervertebral_disc": 15,
    "femur_left": 20,
    "femur_right": 21,
    "hip_left": 22,
    "hip_right": 23,
    "psoas_left": 30,
    "psoas_right": 31,
    "paraspinal_left": 32,
    "paraspinal_right": 33,
    "other_muscle": 34,
    "subcutaneous_fat": 40,
    "visceral_fat": 41,
    "body": 42,  # any other soft tissue inside the body outline
    "aorta": 50,
    "inferior_vena_cava": 51,
    "liver": 52,
    "spleen": 53,
    "kidney_left": 54,
    "kidney_right": 55,
    "bowel": 56,
    "bowel_gas": 57,
    "metal": 60,
    "table": 61,
    # appended by the phantom generator (ESP-like calibration phantom rods, asynchronous calibration)
    "calibration_rod_1": 71,
    "calibration_rod_2": 72,
    "calibration_rod_3": 73,
}
LABEL_NAMES: dict[int, str] = {v: k for k, v in LABELS.items()}


def vertebra_label(level: str) -> int:
    """Our label id of vertebra ``level`` (e.g. ``"L1"``)."""
    return LABELS[f"vertebra_{level}"]


# TotalSegmentator `total` task name -> our name (ids of that task: ../shared/data label_maps.json;
# TotalSegmentator README, class map of v2). Structures we do not model map to "body".
TOTALSEG_TO_OURS: dict[str, str] = {
    **{f"vertebrae_{lvl}": f"vertebra_{lvl}" for lvl in VERTEBRA_LEVELS},
    "vertebrae_S1": "sacrum",
    "sacrum": "sacrum",
    "rib_left_11": "rib_left_11",
    "rib_right_11": "rib_right_11",
    "rib_left_12": "rib_left_12",
    "rib_right_12": "rib_right_12",
    **{f"rib_{side}_{n}": "ribs_other" for side in ("left", "right") for n in range(1, 11)},
    "femur_left": "femur_left",
    "femur_right": "femur_right",
    "hip_left": "hip_left",
    "hip_right": "hip_right",
    "iliopsoas_left": "psoas_left",
    "iliopsoas_right": "psoas_right",
    "autochthon_left": "paraspinal_left",
    "autochthon_right": "paraspinal_right",
    **{f"gluteus_{m}_{s}": "other_muscle" for m in ("maximus", "medius", "minimus") for s in ("left", "right")},
    "aorta": "aorta",
    "inferior_vena_cava": "inferior_vena_cava",
    "liver": "liver",
    "spleen": "spleen",
    "kidney_left": "kidney_left",
    "kidney_right": "kidney_right",
    "small_bowel": "bowel",
    "colon": "bowel",
    "duodenum": "bowel",
}

# TotalSegmentator v2 `total` ids (label_maps.json, key "total"); kept here so the mapping works
# without that file.
TOTALSEG_TOTAL_IDS: dict[int, str] = {
    5: "liver", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 18: "small_bowel", 19: "duodenum",
    20: "colon", 25: "sacrum", 26: "vertebrae_S1", 27: "vertebrae_L5", 28: "vertebrae_L4",
    29: "vertebrae_L3", 30: "vertebrae_L2", 31: "vertebrae_L1", 32: "vertebrae_T12", 33: "vertebrae_T11",
    34: "vertebrae_T10", 52: "aorta", 63: "inferior_vena_cava", 75: "femur_left", 76: "femur_right",
    77: "hip_left", 78: "hip_right", 80: "gluteus_maximus_left", 81: "gluteus_maximus_right",
    82: "gluteus_medius_left", 83: "gluteus_medius_right", 84: "gluteus_minimus_left",
    85: "gluteus_minimus_right", 86: "autochthon_left", 87: "autochthon_right", 88: "iliopsoas_left",
    89: "iliopsoas_right",
    **{92 + n - 1: f"rib_left_{n}" for n in range(1, 13)},
    **{104 + n - 1: f"rib_right_{n}" for n in range(1, 13)},
}


def totalseg_to_ours(total_labels: np.ndarray, id_to_name: dict[int, str] | None = None) -> np.ndarray:
    """Map a TotalSegmentator ``total`` label array to our schema (unknown structures -> 0)."""
    id_to_name = id_to_name or TOTALSEG_TOTAL_IDS
    lut = np.zeros(max(int(total_labels.max()), max(id_to_name)) + 1, dtype=np.int16)
    for ts_id, ts_name in id_to_name.items():
        ours = TOTALSEG_TO_OURS.get(ts_name)
        if ours is not None:
            lut[ts_id] = LABELS[ours]
    return lut[np.clip(total_labels, 0, None).astype(np.int64)]


def looks_like_totalseg(label_values: np.ndarray) -> bool:
    """True when the ids present are TotalSegmentator ``total`` ids rather than ours.

    Any id outside our schema means TotalSegmentator. Otherwise the map is ours, unless it has none of
    our vertebrae (1-9) but ids of TotalSegmentator's vertebra range (25-34). The ranges overlap (our
    psoas/paraspinal ids are 30-33), so counting vertebra-range ids alone misreads an own-schema map
    with one vertebra and both psoas as TotalSegmentator."""
    present = set(np.unique(label_values).tolist()) - {0}
    if present - set(LABEL_NAMES):
        return True
    ts_vertebrae = present & set(range(25, 35))
    ours_vertebrae = present & set(range(1, 10))
    return not ours_vertebrae and bool(ts_vertebrae)


def normalise_label_ids(label_values: np.ndarray, from_model: bool = False) -> tuple[np.ndarray, bool]:
    """A label array in our schema, however it came in: TotalSegmentator ``total`` ids are mapped
    (:func:`totalseg_to_ours`), our own ids are kept. The one place that decides, for the CLI
    (:func:`.pipeline.prepare_labels`), the Slicer module and the browser app. Returns ``(array, mapped)``;
    ``array`` is ``label_values`` itself when nothing was mapped.

    ``from_model``: the models' own label map is in our schema by construction and is never guessed at (a
    model map with no named vertebra but both psoas, ids 30-33, looks like TotalSegmentator's T11-L2, and
    its psoas would be measured as vertebrae)."""
    if not from_model and looks_like_totalseg(label_values):
        return totalseg_to_ours(label_values), True
    return label_values, False
