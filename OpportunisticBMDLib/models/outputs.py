"""Writing what the models predicted: ``labels.nii.gz`` + ``labels.json`` (name -> id) and
``keypoints.json`` + ``keypoints.mrk.json`` (a Slicer markups point list, LPS mm)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import write_like
from ..labels import LABELS
from ..volume import Volume

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                  "Schema/markups-schema-v1.0.3.json#")


def markups_json(keypoints: dict[str, Any]) -> dict[str, Any]:
    """Slicer markups (fiducial list) of the vertebral body centres."""
    points = [
        {"id": str(n), "label": level, "description": "vertebral body centre", "position": p["position_lps_mm"],
         "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0], "selected": True, "locked": False,
         "visibility": True, "positionStatus": "defined"}
        for n, (level, p) in enumerate(keypoints.get("levels", {}).items(), start=1)
    ]
    return {"@schema": MARKUPS_SCHEMA, "markups": [{"type": "Fiducial", "coordinateSystem": "LPS",
                                                    "coordinateUnits": "mm", "locked": False, "labelFormat": "%N-%d",
                                                    "controlPoints": points}]}


def _as_model_keypoints(keypoints: dict[str, Any], ct: Volume) -> dict[str, Any]:
    """Accept :func:`inference.segment`'s dict or the pipeline's ``{"L1 body": (k, j, i)}``."""
    if "levels" in keypoints:
        return keypoints
    levels = {}
    for name, kji in keypoints.items():
        if kji is None:
            continue
        level = name.split()[0]
        levels[level] = {"position_lps_mm": [round(float(v), 2) for v in ct.index_to_lps_mm(kji)],
                         "index_kji": [round(float(v), 2) for v in kji]}
    return {"levels": levels}


def write_model_outputs(labels: Volume | None, keypoints: dict[str, Any] | None, ct: Volume, out_dir: str | Path
                        ) -> dict[str, Path]:
    """Write the predicted label map and keypoints next to results.json; returns the paths written."""
    out = Path(out_dir)
    keypoints = _as_model_keypoints(keypoints, ct) if keypoints is not None else None
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if labels is not None:
        written["labels"] = out / "labels.nii.gz"
        write_like(labels.array, ct, written["labels"])
        written["labels_table"] = out / "labels.json"
        written["labels_table"].write_text(json.dumps(LABELS, indent=2) + "\n")
    if keypoints is not None:
        written["keypoints"] = out / "keypoints.json"
        written["keypoints"].write_text(json.dumps(keypoints, indent=2, default=float) + "\n")
        written["keypoints_markups"] = out / "keypoints.mrk.json"
        written["keypoints_markups"].write_text(json.dumps(markups_json(keypoints), indent=2) + "\n")
    return written
