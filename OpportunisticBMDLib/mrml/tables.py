"""``results.json`` content as table nodes (spine per level, hip per side and region), with units and
descriptions per column; the whole results dict travels as a table attribute and comes back from it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import slicer
import vtk

from ..validity import category_text

ATTR_RESULTS = "OBMD.Results"  # table attribute holding the full results.json text
ATTR_TABLE_KIND = "OBMD.TableKind"  # "spine" | "hip"

# (column name, results key, unit, description) of the per-level spine table.
SPINE_COLUMNS = [
    ("vBMD", "vbmd_mg_cm3", "mg/cm3", "Volumetric BMD, hydroxyapatite-equivalent, trabecular ROI"),
    ("HU mean", "trabecular_hu_mean", "HU", "Mean CT number in the trabecular ROI"),
    ("HU median", "trabecular_hu_median", "HU", "Median CT number in the trabecular ROI"),
    ("HU SD", "trabecular_hu_sd", "HU", "Standard deviation of CT numbers in the trabecular ROI"),
    ("Voxel count", "voxel_count", "voxels", "Number of voxels in the trabecular ROI"),
    ("ROI volume", "roi_volume_mm3", "mm3", "Volume of the trabecular ROI"),
]


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def results_to_table(results: dict, table_node: Any = None, name: str = "BMD results") -> Any:
    """``results.json`` content as a table: one row per vertebral level then a summary row; units and
    descriptions per column as SegmentStatistics gives them; calibration as table attributes
    (``OBMD.calibration.<key>``); the whole results dict as the ``OBMD.Results`` attribute."""
    table_node = table_node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table_node.RemoveAllColumns()
    table = table_node.GetTable()
    spine = results.get("spine", {})
    levels = spine.get("levels", {})
    summary = spine.get("summary", {})
    level_col = vtk.vtkStringArray()
    level_col.SetName("Level")
    num_cols = []
    for col_name, *_ in SPINE_COLUMNS:
        arr = vtk.vtkDoubleArray()
        arr.SetName(col_name)
        num_cols.append(arr)
    category_col = vtk.vtkStringArray()
    category_col.SetName("Category")
    for level, values in levels.items():
        level_col.InsertNextValue(level)
        for arr, (_, key, *_rest) in zip(num_cols, SPINE_COLUMNS, strict=True):
            arr.InsertNextValue(_num(values.get(key)))
        category_col.InsertNextValue("")
    used = summary.get("levels_used") or []
    level_col.InsertNextValue("Summary (" + "-".join(used) + ")" if used else "Summary")
    for arr, (_, key, *_rest) in zip(num_cols, SPINE_COLUMNS, strict=True):
        arr.InsertNextValue(_num(summary.get(key)))
    category_col.InsertNextValue(category_text(summary) if summary else "")
    for arr in [level_col, *num_cols, category_col]:
        table.AddColumn(arr)
    table_node.SetColumnDescription("Level", "Vertebral level (summary: mean of the levels used)")
    table_node.SetColumnDescription("Category", "ACR category of the summary vBMD")
    for col_name, _key, unit, description in SPINE_COLUMNS:
        table_node.SetColumnUnitLabel(col_name, unit)
        table_node.SetColumnTitle(col_name, f"{col_name} ({unit})")
        table_node.SetColumnDescription(col_name, description)
    for key, value in (results.get("calibration") or {}).items():
        if isinstance(value, (int, float, str)):
            table_node.SetAttribute(f"OBMD.calibration.{key}", str(value))
    table_node.SetAttribute(ATTR_RESULTS, json.dumps(results, default=_json_default))
    table_node.SetAttribute("OBMD.Status", str(results.get("status", "")))
    table_node.SetAttribute(ATTR_TABLE_KIND, "spine")
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.Modified()
    return table_node


HIP_REGIONS = ("neck", "trochanter", "intertrochanter", "total_hip")
HIP_COLUMNS = [
    ("aBMD", "abmd_g_cm2", "g/cm2", "Areal BMD of the region in the DXA-like projection (CTXA-like)"),
    ("Area", "area_cm2", "cm2", "Projected area of the region"),
    ("BMC", "bmc_g", "g", "Bone mineral content of the region"),
    ("T-score", "t_score", "SD", "T-score vs NHANES III young White women (ISCD)"),
    ("T-score calibration SD", "t_score_calibration_sd", "SD",
     "1 SD of the T-score from the calibration itself (phantomless muscle-fat: the patient's unknown psoas fat); "
     "empty when the calibration states none (phantom line, user-given densities)"),
]


def hip_results_to_table(results: dict, table_node: Any = None, name: str = "Hip BMD results") -> Any | None:
    """Hip part of ``results.json`` as a table (one row per side and region, category per side);
    None when there are no hip results."""
    hip = results.get("hip") or {}
    sides = [side for side in ("left", "right") if isinstance(hip.get(side), dict)]
    if not sides:
        return None
    table_node = table_node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table_node.RemoveAllColumns()
    side_col, region_col, category_col = vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkStringArray()
    side_col.SetName("Side")
    region_col.SetName("Region")
    category_col.SetName("Category")
    num_cols = []
    for col_name, *_ in HIP_COLUMNS:
        arr = vtk.vtkDoubleArray()
        arr.SetName(col_name)
        num_cols.append(arr)
    for side in sides:
        block = hip[side]
        regions = [r for r in HIP_REGIONS if isinstance(block.get(r), dict)]
        if not regions:  # excluded femur (metal, cut by the field of view): one row saying why
            regions = [None]
        for region in regions:
            side_col.InsertNextValue(side)
            region_col.InsertNextValue(region.replace("_", " ") if region else "excluded")
            values = block.get(region, {}) if region else {}
            for arr, (_, key, *_rest) in zip(num_cols, HIP_COLUMNS, strict=True):
                arr.InsertNextValue(_num(values.get(key)))
            withheld = "; ".join(r["code"] for r in block.get("category_withheld_reasons") or [])
            category_col.InsertNextValue(
                (str(block.get("category") or f"not measurable ({withheld})")) if region
                else str(block.get("excluded_reason") or "")
            )
    for arr in [side_col, region_col, *num_cols, category_col]:
        table_node.GetTable().AddColumn(arr)
    for col_name, _key, unit, description in HIP_COLUMNS:
        table_node.SetColumnUnitLabel(col_name, unit)
        table_node.SetColumnTitle(col_name, f"{col_name} ({unit})")
        table_node.SetColumnDescription(col_name, description)
    table_node.SetColumnDescription("Category", "WHO category of the side from its lowest T-score, or why excluded")
    table_node.SetAttribute(ATTR_TABLE_KIND, "hip")
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.Modified()
    return table_node


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def table_to_results(table_node: Any) -> dict:
    """The results dict a table was made from (its ``OBMD.Results`` attribute)."""
    text = table_node.GetAttribute(ATTR_RESULTS)
    if not text:
        raise ValueError(f"{table_node.GetName()}: not an OpportunisticBMD results table")
    return json.loads(text)


def table_rows(table_node: Any) -> list[dict[str, Any]]:
    """The table as a list of row dicts (column name -> value), as a user sees it."""
    table = table_node.GetTable()
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c in range(table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            value = column.GetValue(r)
            row[column.GetName()] = value if isinstance(column, vtk.vtkStringArray) else float(value)
        rows.append(row)
    return rows

