"""CT + label map -> ROIs -> calibration -> measurement sites (spine, hip) -> results.json and masks.

``analyze`` = segment (when no labels are given) + ``derive_rois`` + ``measure``; ``measure`` calibrates
once and measures every site on that :class:`Calibration` (the spine's levels, each femur in view), so a
user can edit the ROI masks between the two halves (Slicer's Recompute calls ``measure`` on the edited masks).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import input_checks, qc, spine, validity
from . import rois as tissue_rois
from .calibration import Calibration, calibrate, check_options
from .errors import ModelError, SegmentationError
from .header import AGE_RANGE_Y, age_years, plausible_age
from .hip.site import femur_in_view, measure_hip_site
from .io import HEADER_KEYS, check_ct_modality, check_same_grid, write_like
from .labels import LABELS, MEASURED_LEVELS, normalise_label_ids, vertebra_label
from .progress import Progress, no_progress, scaled
from .report import write_report
from .report.identification import identification
from .report.pdf import ReportOptions
from .results import build_results, csv_row, write_csv, write_json
from .settings import AnalysisOptions
from .volume import Volume

TRABECULAR_PREFIX = "trabecular_"
# Levels whose slices bound the muscle and fat ROIs: down to L4 only, since from L5 down the
# iliopsoas label also holds the iliacus in the iliac fossa (and the pelvis has no anterior-wall
# layout like the abdomen's).
REFERENCE_TISSUE_LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4")
DICOM_KEYS = ("format", *HEADER_KEYS, "series_choice")  # series_choice: which series of a DICOM folder, and why
MODEL_LABELS_SOURCE = "obmd-models"  # results input.labels_source of labels the segmentation models made


# The built-in model labels on a 3 mm grid: their vertebra boundary lies up to a model voxel too far
# out, and a boundary one partial-volume voxel too far out leaves bright cortex inside the 3.2 mm
# erosion. Chosen on digital patients kept apart from the benchmark (seeds 1100-1111; the cohort
# benchmark uses 1000-1049): median L1-L2 model-minus-truth-label difference (exact calibration line)
# +41.9 mg/cm3 with no margin, +20.9 with 1.5 mm, -0.4 with 2.5 mm, -1.0 with 3.5 mm; on the shared
# CT the model's L1-L2 ROI HU stays within 2 HU of TotalSegmentator's labels at the plain 3.2 mm.
MODEL_LABEL_MARGIN_MM = 2.5


def label_margin_mm(options: AnalysisOptions, labels: Volume | None) -> float:
    """The extra erosion for ``labels``: the option when set, else by where the labels came from."""
    if options.label_margin_mm is not None:
        return float(options.label_margin_mm)
    return MODEL_LABEL_MARGIN_MM if labels is not None and labels.metadata.get("source") == "model" else 0.0


def erosion_mm(options: AnalysisOptions, labels: Volume | None) -> float:
    """Total cortex-removal radius used for ``labels`` (mm)."""
    return float(options.erosion_radius_mm) + label_margin_mm(options, labels)


@dataclass
class AnalysisResult:
    results: dict  # exactly what results.json holds
    rois: dict[str, np.ndarray]  # bool masks on the CT grid (k, j, i)
    labels: Volume | None  # the label map used (our schema)
    keypoints: dict[str, Any] = field(default_factory=dict)  # {name: (k, j, i)} when the models gave them
    labels_predicted: bool = False
    pictures: dict[str, Any] = field(default_factory=dict)  # e.g. hip projections (hip_<side>)
    calibration: Calibration | None = None  # the line every site used (results["calibration"] is its record)


# metadata key: the label array (the object itself) last found to be in our schema: its ids scan takes
# ~0.4 s per 512x512x300 map and analyze and measure both ask; a new or replaced array is checked again
_SCHEMA_CHECKED = "_schema_checked_array"


def prepare_labels(labels: Volume, ct: Volume) -> Volume:
    """Labels on the CT's grid in our schema (TotalSegmentator ``total`` ids are mapped)."""
    check_same_grid(labels, ct, what=labels.metadata.get("path", "label map"))
    if labels.metadata.get(_SCHEMA_CHECKED) is labels.array:
        return labels  # this very array was found to be in our schema already
    # the models write our schema: never guessed (see labels.normalise_label_ids)
    predicted = labels.metadata.get("source_schema") == MODEL_LABELS_SOURCE
    array, was_mapped = normalise_label_ids(labels.array, from_model=predicted)
    if was_mapped:
        mapped = labels.like(array, **labels.metadata)
        mapped.metadata["source_schema"] = "totalsegmentator-total"
        mapped.metadata[_SCHEMA_CHECKED] = mapped.array
        return mapped
    labels.metadata[_SCHEMA_CHECKED] = labels.array
    return labels


def _body_array(body_mask: Volume | np.ndarray | None, ct: Volume) -> np.ndarray | None:
    """TotalSegmentator ``vertebrae_body`` (label 1 = bodies, 2 = discs) or any bool body mask."""
    if body_mask is None:
        return None
    if isinstance(body_mask, Volume):
        check_same_grid(body_mask, ct, what=body_mask.metadata.get("path", "vertebral body mask"))
        body_mask = body_mask.array
    return np.asarray(body_mask) == 1


def derive_rois(
    ct: Volume,
    labels: Volume,
    options: AnalysisOptions,
    body_mask: Volume | np.ndarray | None = None,
    geometry_out: dict | None = None,
) -> dict[str, np.ndarray]:
    """ROI masks from a label map: ``trabecular_<level>`` per level present, ``muscle_roi``, ``fat_roi``.
    ``geometry_out`` (a dict) receives the vertebral bodies and erosion radii for :func:`measure`."""
    radius_mm = erosion_mm(options, labels)
    labels = prepare_labels(labels, ct)
    trab, bodies, radii = spine.derive_level_rois(labels, _body_array(body_mask, ct), radius_mm,
                                                  slice_thickness_mm=qc.slice_thickness_mm(ct))
    if geometry_out is not None:
        geometry_out.update(bodies=bodies, radii=radii)
    if not trab:
        raise SegmentationError(
            f"no vertebra {MEASURED_LEVELS[0]}-{MEASURED_LEVELS[-1]} in the label map: nothing to measure"
        )
    out = {f"{TRABECULAR_PREFIX}{lvl}": roi for lvl, roi in trab.items()}
    ref_bodies = [bodies[lvl] for lvl in REFERENCE_TISSUE_LEVELS if lvl in bodies] or list(bodies.values())
    z_range = tissue_rois.z_range_of(ref_bodies)
    out["muscle_roi"] = tissue_rois.muscle_roi(ct, labels, z_range)
    spine_mask = np.zeros(ct.shape, dtype=bool)
    for body in bodies.values():
        spine_mask |= body
    out["fat_roi"] = tissue_rois.anterior_fat_roi(ct, z_range, spine_mask, labels).mask
    return out


def fat_thickness_mm(fat_roi: np.ndarray, spacing_mm: tuple[float, float, float]) -> float | None:
    """Median anterior-posterior thickness (mm) of the fat ROI over the (k, i) columns it covers."""
    counts = fat_roi.sum(axis=1)
    counts = counts[counts > 0]
    return float(np.median(counts) * spacing_mm[1]) if counts.size else None


def _input_info(ct: Volume, labels: Volume | None, source: str, body_mask: Any) -> dict[str, Any]:
    info = {
        "ct": ct.metadata.get("path"),
        "shape_kji": list(ct.shape),
        "spacing_mm_kji": list(ct.spacing_mm),
        "labels": None if labels is None else labels.metadata.get("path"),
        "labels_source": source,
        "vertebral_body_mask": body_mask.metadata.get("path") if isinstance(body_mask, Volume) else (
            None if body_mask is None else "given"),
    }
    info.update({k: ct.metadata[k] for k in DICOM_KEYS if k in ct.metadata})
    info["identification"] = identification(ct.metadata)  # the report's header: only what the header says
    return info


def level_confidence(labels: Volume | None, level: str) -> dict[str, float | None]:
    """``naming_confidence`` and ``segmentation_confidence`` of a level the model labelled (label metadata
    from models/inference.py); null for labels given by the user or another tool."""
    conf = ((labels.metadata.get("level_confidence") if labels is not None else None) or {}).get(level) or {}
    return {"naming_confidence": conf.get("naming"), "segmentation_confidence": conf.get("segmentation")}


def header_age_flags(metadata: dict[str, Any], options: AnalysisOptions) -> list[dict[str, str]]:
    """A notice when the header's age was readable but implausible (header.AGE_RANGE_Y) and so not used:
    the age-typical marrow and psoas fat and the Z-score then take the age as unknown."""
    header_age = age_years(metadata.get("patient_age"))
    if options.patient_age is not None or header_age is None or plausible_age(header_age):
        return []
    low, high = AGE_RANGE_Y
    return [qc.flag("header_age_implausible", "warning",
                    f"the header's patient age {metadata.get('patient_age')!s} ({header_age:g} y) is not more than "
                    f"{low:g} and at most {high:g} y: ignored, the age is taken as unknown (give --age to set it)")]


def measure(
    ct: Volume,
    rois: dict[str, np.ndarray],
    options: AnalysisOptions,
    labels: Volume | None = None,
    body_mask: Volume | np.ndarray | None = None,
    geometry: dict | None = None,
    hip: bool = True,
) -> AnalysisResult:
    """Calibrate once and measure every site from ROI masks (possibly user-edited): the spine's levels and,
    with ``hip`` and a femur labelled, each hip on the same :class:`Calibration`. ``labels`` (our schema or
    TotalSegmentator) add vertebral geometry (heights, field-of-view cut), the contrast check and the femurs;
    ``geometry`` (from ``derive_rois(geometry_out=...)`` on the same labels) saves recomputing it."""
    options = options.with_header_defaults(ct.metadata)
    rois = {k: np.asarray(v, dtype=bool) for k, v in rois.items()}
    margin_mm = label_margin_mm(options, labels)
    radius_mm = float(options.erosion_radius_mm) + margin_mm
    if labels is not None:
        labels = prepare_labels(labels, ct)
    calibration = calibrate(ct, rois, labels, options)
    bodies, radii = {}, {}
    if geometry is not None:
        bodies, radii = geometry["bodies"], geometry["radii"]
    elif labels is not None:
        _, bodies, radii = spine.derive_level_rois(labels, _body_array(body_mask, ct), radius_mm,
                                                   slice_thickness_mm=qc.slice_thickness_mm(ct))
    levels: dict[str, dict[str, Any]] = {}
    flags: list[dict[str, str]] = []
    trab = {k[len(TRABECULAR_PREFIX):]: v for k, v in rois.items() if k.startswith(TRABECULAR_PREFIX)}
    near_metal = qc.metal_near_levels(ct, trab)
    for level in [lvl for lvl in MEASURED_LEVELS if lvl in trab]:
        vertebra = labels.array == vertebra_label(level) if labels is not None else None
        m = spine.measure_level(ct, level, trab[level], bodies.get(level), vertebra, radius_mm,
                                radii.get(level))
        entry = {"vbmd_mg_cm3": calibration.to_mg_cm3(m.trabecular_hu_mean) if m.voxel_count else None,
                 **m.as_dict(), **level_confidence(labels, level)}
        level_flags = qc.level_flags(level, entry)
        codes = {f["code"] for f in level_flags} | ({"metal_near_roi"} if level in (near_metal or []) else set())
        reasons = sorted(codes & qc.EXCLUDING_CODES)
        entry["excluded"] = bool(reasons)  # kept out of the summary when other levels are fine
        entry["exclusion_reasons"] = reasons
        levels[level] = entry
        flags += level_flags
    flags = qc.missing_level_flags(list(levels)) + flags
    thickness = fat_thickness_mm(rois["fat_roi"], ct.spacing_mm) if "fat_roi" in rois else None
    cal = calibration.as_dict()
    source = tissue_rois.muscle_source(rois["muscle_roi"], labels) if "muscle_roi" in rois else None
    if source is not None:
        cal["muscle_roi_source"] = source
    flags += qc.muscle_reference_flags(source, cal.get("method"))
    flags += qc.slice_thickness_flags(ct, radius_mm)
    flags += qc.calibration_flags(cal, thickness)
    flags += qc.line_tissue_flags(cal)
    flags += qc.contrast_flags(ct, labels)
    flags += qc.metal_flags(near_metal)
    flags += input_checks.orientation_flags(ct)
    flags += header_age_flags(ct.metadata, options)
    tissues = {
        "fat_thickness_mm": thickness,
        "muscle_roi_voxels": int(rois["muscle_roi"].sum()) if "muscle_roi" in rois else 0,
        "fat_roi_voxels": int(rois["fat_roi"].sum()) if "fat_roi" in rois else 0,
    }
    label_source = "none" if labels is None else labels.metadata.get("source_schema", "obmd")
    results = build_results(
        input_info=_input_info(ct, labels, label_source, body_mask),
        levels=levels,
        calibration=cal,
        qc=flags,
        options={**options.as_dict(), "label_margin_mm": margin_mm},
        tissues=tissues,
    )
    result = AnalysisResult(results=validity.finalize(results), rois=rois, labels=labels, calibration=calibration)
    if hip and femur_in_view(labels):
        add_hip(result, ct, options)
        validity.finalize(results)  # WHO categories only where backed; the status counts every site
    return result


def add_hip(result: AnalysisResult, ct: Volume, options: AnalysisOptions) -> None:
    """The hip site on ``result``'s calibration and labels: ``results["hip"]``, its QC flags in the scan's
    list, its ROI masks and pictures (``options`` with the header defaults resolved; the caller finalizes)."""
    site = measure_hip_site(ct, result.labels, result.calibration, result.rois, options)
    result.results["hip"] = site.results
    result.results.setdefault("qc", []).extend(site.qc)
    result.rois.update(site.rois)
    result.pictures.update(site.pictures)


def _segment(ct: Volume, options: AnalysisOptions, progress: Progress) -> tuple[Volume, dict[str, Any]]:
    try:
        from .models.inference import segment
    except ImportError as exc:
        raise ModelError("no segmentation given and the models are not installed yet: pass --seg LABELS") from exc
    return segment(ct, device=options.device, progress=progress, backend=options.segmentation_backend)


def analyze(
    ct: Volume,
    labels: Volume | None,
    options: AnalysisOptions | None = None,
    progress: Progress = no_progress,
    body_mask: Volume | np.ndarray | None = None,
) -> AnalysisResult:
    """The whole analysis; with ``labels`` None the segmentation models produce them."""
    options = (options or AnalysisOptions()).with_header_defaults(ct.metadata)  # once, for every site
    check_options(options)
    # files are checked on reading; a Slicer node's header (DICOM database, attributes) here
    check_ct_modality(ct.metadata.get("modality"), f"{ct.metadata.get('name') or 'the volume'}: its header says")
    input_checks.check_patient_ct(ct)  # finite, and CT of a body (a fat peak), before any model runs
    keypoints: dict[str, Any] = {}
    model_info: dict[str, Any] = {}
    predicted = labels is None
    if predicted:
        labels, raw = _segment(ct, options, scaled(progress, 0.0, 0.6))
        keypoints = {f"{lvl} body": v.get("index_kji") for lvl, v in (raw.get("levels") or {}).items()}
        model_info = {k: v for k, v in raw.items() if k not in ("levels", "qc")}
        model_qc = list(raw.get("qc") or [])
        labels.metadata.setdefault("source_schema", MODEL_LABELS_SOURCE)
    else:
        model_qc = []
    progress(0.6, "Isolating vertebral bodies and reference tissues")
    labels = prepare_labels(labels, ct)
    input_checks.check_anatomy(ct, labels, predicted)
    geometry: dict = {}
    rois = derive_rois(ct, labels, options, body_mask, geometry_out=geometry)
    progress(0.8, "Calibrating and measuring the spine and the hips")
    result = measure(ct, rois, options, labels, body_mask, geometry=geometry)
    if predicted:
        result.results["software"]["models"] = model_info
        result.results["qc"] = model_qc + result.results["qc"]
        validity.finalize(result.results)  # the model's naming flags join the status
    result.keypoints = keypoints
    result.labels_predicted = predicted
    progress(1.0, "Done")
    return result


def write_outputs(result: AnalysisResult, ct: Volume, out_dir: str | Path,
                  report_options: ReportOptions | None = None) -> dict[str, Path]:
    """``results.json``, ``results.csv``, ``report.pdf``, ``masks/<roi>.nii.gz`` (CT grid) and ``labels.nii.gz``
    when predicted; ``report_options``: the PDF's page size (None: A4)."""
    out_dir = Path(out_dir)
    written = {"results.json": write_json(result.results, out_dir / "results.json"),
               "results.csv": write_csv(csv_row(result.results), out_dir / "results.csv")}
    # two writer threads: SimpleITK compresses outside the GIL, so mask writing takes half the time
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = pool.map(lambda item: write_like(item[1].astype(np.uint8), ct, out_dir / "masks" / f"{item[0]}.nii.gz"),
                         list(result.rois.items()))
        for name, path in zip(result.rois, paths, strict=True):
            written[f"masks/{name}"] = path
    if result.pictures:  # the hip's DXA-like report PNGs
        from .hip.pictures import save_hip_pictures

        written.update(save_hip_pictures(result.pictures, out_dir))
    if result.labels_predicted and result.labels is not None:
        from .models.outputs import write_model_outputs  # labels.nii.gz + labels.json, keypoints(.mrk).json

        written.update(write_model_outputs(result.labels, result.keypoints or None, ct, out_dir))
    written["report.pdf"] = write_report(result, ct, out_dir, report_options)  # page 1 spine, page 2 hip
    return written


__all__ = ["AnalysisOptions", "AnalysisResult", "analyze", "derive_rois", "measure", "write_outputs", "LABELS"]
