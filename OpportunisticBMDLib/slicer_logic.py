"""The Slicer-facing logic, free of Qt and of ScriptedLoadableModule so it runs headless.

``OpportunisticBMD.OpportunisticBMDLogic`` (desktop Slicer) and the browser app both wrap
:class:`BMDLogic`. It converts MRML nodes with :mod:`.mrml_bridge`, runs :mod:`.pipeline`, and puts
the outputs back as nodes: a results table, a ROI segmentation (trabecular ROI per level, muscle
ROI, fat ROI), a label segmentation when the models produced the labels, and a keypoints point list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import mrml_bridge as bridge
from . import validity
from .io import write_like, write_sidecar
from .labels import LABELS, VERTEBRA_LEVELS, looks_like_totalseg, totalseg_to_ours, vertebra_label
from .progress import Progress, no_progress
from .settings import AnalysisOptions
from .volume import Volume

REF_INPUT = "OBMD.InputVolume"  # node reference from every output node to its CT
REF_LABELS = "OBMD.Labels"  # from the ROI segmentation to the label segmentation used


@dataclass
class AnalysisOutputs:
    """The nodes an analysis made or updated, plus the library objects behind them."""

    table_node: Any = None
    roi_segmentation_node: Any = None
    markups_node: Any = None
    labels_segmentation_node: Any = None
    hip_table_node: Any = None
    result: Any = None  # pipeline.AnalysisResult
    ct: Volume | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecomputeJob:
    """What :meth:`BMDLogic.prepare_recompute` read from the scene; :meth:`measure` touches no MRML object
    (numpy only), so it may run in a worker thread."""

    ct: Volume
    rois: dict[str, np.ndarray]
    labels: Volume | None
    options: AnalysisOptions
    previous: dict | None  # the results the table held (the last Analyze or Recompute)
    recompute_hip: bool | None
    volume_node: Any
    table_node: Any
    roi_segmentation_node: Any
    labels_segmentation_node: Any
    model_naming: dict | None = None  # the model's naming evidence, while its vertebra labels are unedited
    hip_recomputed: bool = False

    def measure(self) -> Any:
        """``pipeline.measure`` on the ROIs (with the model's naming evidence carried over), then the hip
        (redone or carried over with its QC)."""
        from . import pipeline

        result = pipeline.measure(self.ct, self.rois, self.options, labels=self.labels, hip=False)
        if self.model_naming:
            _carry_model_naming(result.results, self.model_naming)
        self.hip_recomputed = _hip_after_measure(result, self.previous, self.ct, self.options,
                                                 recompute=self.recompute_hip)
        return result


def model_naming_evidence(previous: dict | None, labels_edited: bool) -> dict | None:
    """What the last Analyze knew about the model's level naming (its naming flags, per-level confidences),
    or None when the labels were not the model's or a user has edited a vertebra since (the naming is then
    theirs). Recompute measures labels read back from the scene, which carry none of it: without this an
    uncertain naming would back a category after a Recompute with no edit."""
    from .pipeline import MODEL_LABELS_SOURCE

    if not previous or labels_edited or (previous.get("input") or {}).get("labels_source") != MODEL_LABELS_SOURCE:
        return None
    levels = (previous.get("spine") or {}).get("levels") or {}
    return {"qc": [q for q in previous.get("qc") or [] if q.get("code") in validity.NAMING_UNCERTAIN_CODES],
            "levels": {lvl: {key: entry.get(key) for key in ("naming_confidence", "segmentation_confidence")}
                       for lvl, entry in levels.items()}}


def _carry_model_naming(results: dict, evidence: dict) -> None:
    results["qc"] = list(evidence["qc"]) + list(results.get("qc") or [])
    for level, entry in (results.get("spine") or {}).get("levels", {}).items():
        entry.update(evidence["levels"].get(level) or {})
    from .pipeline import MODEL_LABELS_SOURCE

    results.setdefault("input", {})["labels_source"] = MODEL_LABELS_SOURCE
    validity.finalize(results)


def make_options(options: AnalysisOptions | dict | None) -> AnalysisOptions:
    """:class:`settings.AnalysisOptions` from None (defaults), a dict of its fields (``as_dict``), or itself."""
    if options is None:
        return AnalysisOptions()
    if isinstance(options, dict):
        return AnalysisOptions.from_dict(options)
    return options


_options = make_options  # the name web/workflow.py imports


def vertebra_centres(labels: Volume) -> dict[str, np.ndarray]:
    """Keypoints shown when the models gave none: centroid (k, j, i) of each vertebra label."""
    from scipy import ndimage

    ids = [vertebra_label(level) for level in VERTEBRA_LEVELS]
    counts = np.bincount(labels.array.ravel().clip(0), minlength=max(ids) + 1)
    present = [(level, i) for level, i in zip(VERTEBRA_LEVELS, ids, strict=True) if counts[i]]
    if not present:
        return {}
    centres = ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels.array, [i for _, i in present])
    return {f"{level} centre": np.asarray(c) for (level, _), c in zip(present, centres, strict=True)}


class BMDLogic:
    """Analyze / recompute / export / report on MRML nodes of ``slicer.mrmlScene``."""

    def __init__(self) -> None:
        self._ct_cache: dict[str, tuple[Any, Volume]] = {}

    def ct_volume(self, volume_node: Any) -> Volume:
        """The CT node as a :class:`Volume`, converted once per voxel/geometry change (Recompute is
        called after every edit; converting a 512x512 CT each time would cost seconds)."""
        image = volume_node.GetImageData()
        key = (image.GetMTime() if image is not None else 0, bridge.node_geometry(volume_node))
        cached = self._ct_cache.get(volume_node.GetID())
        if cached is None or cached[0] != key:
            self._ct_cache = {volume_node.GetID(): (key, bridge.volume_from_node(volume_node))}
        return self._ct_cache[volume_node.GetID()][1]

    def labels_from_node(self, node: Any, volume_node: Any, ct: Volume) -> Volume:
        """Our label map from a segmentation node or a label map volume node (TotalSegmentator ids or names
        are mapped to our schema)."""
        if node.IsA("vtkMRMLSegmentationNode"):
            return bridge.segmentation_to_labels(node, volume_node, ct)
        labels = bridge.volume_from_node(node, dtype=np.int16)
        if looks_like_totalseg(labels.array):
            labels.array = totalseg_to_ours(labels.array)
        from .io import check_same_grid

        check_same_grid(labels, ct)
        return labels

    def analyze(
        self,
        volume_node: Any,
        segmentation_node: Any = None,
        options: AnalysisOptions | dict | None = None,
        progress: Progress = no_progress,
        outputs: AnalysisOutputs | None = None,
        overwrite_edited: bool = False,
        result: Any = None,
    ) -> AnalysisOutputs:
        """Full analysis. Without a segmentation the models segment the CT. Output nodes in
        ``outputs`` are updated in place (edited ROI segments are kept unless ``overwrite_edited``).

        ``result``: an ``AnalysisResult`` already computed for this CT (e.g. by a worker thread or a
        background ``obmd analyze`` process); then only the nodes are made."""
        from . import pipeline

        outputs = outputs or AnalysisOutputs()
        options = _options(options)
        progress(0.0, "Reading the CT from the scene")
        ct = self.ct_volume(volume_node)
        if result is None:
            labels = None
            if segmentation_node is not None:
                labels = self.labels_from_node(segmentation_node, volume_node, ct)
            result = pipeline.analyze(ct, labels, options, progress=progress)
        progress(0.95, "Creating segments and the results table")
        if segmentation_node is None and result.labels is not None:
            outputs.labels_segmentation_node = bridge.labels_to_segmentation(
                result.labels, volume_node, outputs.labels_segmentation_node, name=f"{volume_node.GetName()} labels"
            )
        elif segmentation_node is not None:
            outputs.labels_segmentation_node = segmentation_node
        outputs.roi_segmentation_node = bridge.rois_to_segmentation(
            result.rois, ct, volume_node, outputs.roi_segmentation_node,
            name=f"{volume_node.GetName()} BMD ROIs", overwrite_edited=overwrite_edited,
        )
        if not overwrite_edited:
            # Edited segments were kept: the numbers must come from what is in the scene.
            rois, edited = bridge.read_rois(outputs.roi_segmentation_node, volume_node, ct)
            if edited:
                full = result
                result = pipeline.measure(ct, rois, options, labels=full.labels)
                result.keypoints, result.labels_predicted = full.keypoints, full.labels_predicted
        outputs.table_node = bridge.results_to_table(
            result.results, outputs.table_node, name=f"{volume_node.GetName()} BMD results"
        )
        outputs.hip_table_node = bridge.hip_results_to_table(
            result.results, outputs.hip_table_node, name=f"{volume_node.GetName()} hip BMD results"
        )
        keypoints = getattr(result, "keypoints", None)
        if not keypoints and result.labels is not None:
            keypoints = vertebra_centres(result.labels)
        if keypoints:
            outputs.markups_node = bridge.keypoints_to_markups(
                keypoints, ct, outputs.markups_node, name=f"{volume_node.GetName()} keypoints"
            )
        self._link(volume_node, outputs)
        outputs.result, outputs.ct = result, ct
        progress(1.0, "Done")
        return outputs

    def _link(self, volume_node: Any, outputs: AnalysisOutputs) -> None:
        nodes = [outputs.table_node, outputs.hip_table_node, outputs.roi_segmentation_node, outputs.markups_node]
        if outputs.labels_segmentation_node is not None:
            nodes.append(outputs.labels_segmentation_node)
        for node in nodes:
            if node is not None:
                node.SetNodeReferenceID(REF_INPUT, volume_node.GetID())
        if outputs.roi_segmentation_node is not None and outputs.labels_segmentation_node is not None:
            outputs.roi_segmentation_node.SetNodeReferenceID(REF_LABELS, outputs.labels_segmentation_node.GetID())
        bridge.place_in_study(volume_node, *nodes)

    def recompute(
        self,
        volume_node: Any,
        roi_segmentation_node: Any,
        labels_segmentation_node: Any = None,
        options: AnalysisOptions | dict | None = None,
        table_node: Any = None,
        rederive_rois: bool = False,
        overwrite_edited: bool = False,
        recompute_hip: bool | None = None,
    ) -> AnalysisOutputs:
        """Measure again from the ROI segments as they are now (user edits included), without models.
        The hip (seconds) is redone when the calibration line changed (an edited muscle or fat ROI, another
        method or composition) or with ``recompute_hip=True``; ``False`` keeps the last Analyze's hip
        results (with their QC flags), with a QC note when the calibration has changed since.

        With ``rederive_rois`` the ROIs are derived again from the (possibly edited) label
        segmentation first; segments tagged edited are still kept unless ``overwrite_edited``.

        Three steps, so that a caller with an event loop (the browser app) can run the middle one, the
        slow and MRML-free one, in a worker thread: :meth:`prepare_recompute`, :meth:`RecomputeJob.measure`,
        :meth:`finish_recompute`."""
        job = self.prepare_recompute(volume_node, roi_segmentation_node, labels_segmentation_node, options,
                                     table_node, rederive_rois, overwrite_edited, recompute_hip)
        return self.finish_recompute(job, job.measure())

    def prepare_recompute(
        self,
        volume_node: Any,
        roi_segmentation_node: Any,
        labels_segmentation_node: Any = None,
        options: AnalysisOptions | dict | None = None,
        table_node: Any = None,
        rederive_rois: bool = False,
        overwrite_edited: bool = False,
        recompute_hip: bool | None = None,
    ) -> RecomputeJob:
        """Recompute's first step (MRML reads, on the scene's thread): the CT, ROIs, labels and the previous
        results as library objects. Arguments as :meth:`recompute`."""
        from . import pipeline

        options = _options(options)
        ct = self.ct_volume(volume_node)
        if table_node is None:
            table_node = _find_referencing(volume_node, "vtkMRMLTableNode", kind="spine")
        previous = bridge.table_to_results(table_node) if table_node is not None and table_node.GetAttribute(
            bridge.ATTR_RESULTS) else None
        if options.label_margin_mm is None and previous:
            # keep Analyze's cortex margin (pipeline.MODEL_LABEL_MARGIN_MM for model labels): same ROIs, same numbers
            margin = (previous.get("options") or {}).get("label_margin_mm")
            if margin is not None:
                options = replace(options, label_margin_mm=float(margin))
        if labels_segmentation_node is None:
            labels_segmentation_node = roi_segmentation_node.GetNodeReference(REF_LABELS)
        labels = (
            self.labels_from_node(labels_segmentation_node, volume_node, ct) if labels_segmentation_node else None
        )
        if rederive_rois:
            bridge.update_edited_tags(roi_segmentation_node, volume_node)
            if labels is None:
                raise ValueError("re-deriving ROIs needs the label segmentation")
            bridge.rois_to_segmentation(
                pipeline.derive_rois(ct, labels, options), ct, volume_node, roi_segmentation_node,
                overwrite_edited=overwrite_edited,
            )
        rois, _edited = bridge.read_rois(roi_segmentation_node, volume_node, ct)
        # the model's labels are a segmentation node; a label map volume node is the user's own
        segmentation = labels_segmentation_node is not None and labels_segmentation_node.IsA("vtkMRMLSegmentationNode")
        vertebrae_edited = bool(segmentation and bridge.update_edited_tags(labels_segmentation_node, volume_node,
                                                                           prefix="vertebra_"))
        return RecomputeJob(ct=ct, rois=rois, labels=labels, options=options, previous=previous,
                            recompute_hip=recompute_hip, volume_node=volume_node, table_node=table_node,
                            roi_segmentation_node=roi_segmentation_node,
                            labels_segmentation_node=labels_segmentation_node,
                            model_naming=model_naming_evidence(previous, vertebrae_edited))

    def finish_recompute(self, job: RecomputeJob, result: Any) -> AnalysisOutputs:
        """Recompute's last step (MRML writes, on the scene's thread): ``result`` of :meth:`RecomputeJob.measure`
        into the results tables. ``outputs.extra["hip_recomputed"]`` says whether the hip was measured again."""
        volume_node = job.volume_node
        table_node = bridge.results_to_table(result.results, job.table_node,
                                             name=f"{volume_node.GetName()} BMD results")
        hip_table_node = _find_referencing(volume_node, "vtkMRMLTableNode", kind="hip")
        if result.results.get("hip"):  # else the hip table of the last Analyze stays as it is
            hip_table_node = bridge.hip_results_to_table(
                result.results, hip_table_node, name=f"{volume_node.GetName()} hip BMD results"
            )
        outputs = AnalysisOutputs(
            table_node=table_node, hip_table_node=hip_table_node, roi_segmentation_node=job.roi_segmentation_node,
            labels_segmentation_node=job.labels_segmentation_node, result=result, ct=job.ct,
            extra={"hip_recomputed": job.hip_recomputed},
        )
        self._link(volume_node, outputs)
        return outputs

    def hip_picture_files(self, result: Any, out_dir: str | Path) -> dict[str, Path]:
        """PNG files of the hip projections with their regions (empty when no hip was analysed)."""
        pictures = getattr(result, "pictures", None) or {}
        files = {k: Path(v) for k, v in pictures.items() if isinstance(v, (str, Path))}
        objects = {k: v for k, v in pictures.items() if not isinstance(v, (str, Path))}
        if objects:
            from .hip.pictures import save_hip_pictures

            files.update(save_hip_pictures(objects, Path(out_dir)))
        return files

    def save_report(self, result: Any, ct: Volume, out_dir: str | Path) -> dict[str, Path]:
        """The files ``obmd analyze`` writes (results.json, results.csv, masks/*.nii.gz), in a new or earlier
        report folder replaced whole (:mod:`.output_folder`: a folder holding anything else is refused)."""
        from .output_folder import staged_output
        from .pipeline import write_outputs

        out_dir = Path(out_dir)
        with staged_output(out_dir) as staging:
            written = write_outputs(result, ct, staging)
        return {key: out_dir / path.relative_to(staging) for key, path in written.items()}

    def export_training_case(
        self,
        volume_node: Any,
        segmentation_node: Any,
        dataset_dir: str | Path,
        case_id: str | None = None,
    ) -> dict[str, Path]:
        """Append the CT and its (corrected) label map to an nnU-Net v2 raw dataset folder:
        ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz`` (our label schema, CT's own grid)
        and ``dataset.json`` (``labels`` = :data:`.labels.LABELS`, ``numTraining`` = cases present)."""
        dataset_dir = Path(dataset_dir)
        ct = self.ct_volume(volume_node)
        labels = self.labels_from_node(segmentation_node, volume_node, ct)
        if not np.any(labels.array):
            raise ValueError(f"{segmentation_node.GetName()}: no segment maps to a label of the schema")
        case_id = case_id or _next_case_id(dataset_dir, volume_node.GetName())
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", case_id):
            raise ValueError(f"case id {case_id!r}: use letters, digits, '_' and '-' only")
        image_path = dataset_dir / "imagesTr" / f"{case_id}_0000.nii.gz"
        label_path = dataset_dir / "labelsTr" / f"{case_id}.nii.gz"
        if image_path.exists() or label_path.exists():
            raise FileExistsError(f"{case_id}: already in {dataset_dir}")
        ct_out = ct.like(ct.array)
        ct_out.metadata = {}  # not the input path: write_like refuses to overwrite an input only
        write_like(np.round(ct.array).astype(np.int16), ct_out, image_path)
        write_like(labels.array.astype(np.uint8), ct_out, label_path)
        dataset_json = _update_dataset_json(dataset_dir)
        return {"image": image_path, "label": label_path, "dataset_json": dataset_json}


def _hip_after_measure(result: Any, previous: dict | None, ct: Volume, options: AnalysisOptions,
                       recompute: bool | None) -> bool:
    """After ``pipeline.measure(hip=False)``: redo the hip (``recompute``; None: when the calibration changed since the
    previous results -- its line or the compositions given, which under a pad move the hip's anchor and
    not the line -- or there are none) or carry the previous hip results over, their QC flags with them
    (a T-score must never lose the warnings that qualify it). True when the hip was measured again."""
    changed = _calibration_inputs(previous or {}) != _calibration_inputs(result.results)
    if recompute is None:
        recompute = not previous or changed
    if recompute and result.labels is not None:
        from . import pipeline
        from .hip.site import femur_in_view

        if femur_in_view(result.labels):
            pipeline.add_hip(result, ct, options.with_header_defaults(ct.metadata))
            validity.finalize(result.results)
            return True
    if not previous or not previous.get("hip"):
        return False
    result.results["hip"] = previous["hip"]
    qc = result.results.setdefault("qc", [])
    for block in previous["hip"].values():  # pipeline.add_hip put each side's flags in the scan's QC list too
        if isinstance(block, dict):
            qc.extend(block.get("qc") or [])
    if changed:
        qc.append({
            "code": "hip_not_recomputed", "severity": "info",
            "message": "Hip aBMD is from the last Analyze, before the calibration changed: Analyze again to update it.",
        })
    validity.finalize(result.results)
    return False


def _calibration_inputs(results: dict) -> tuple[dict, dict]:
    """What the hip's numbers depend on from the calibration: its line and the parameters given."""
    cal = results.get("calibration") or {}
    return ({k: cal.get(k) for k in ("slope", "intercept")},
            dict((results.get("options") or {}).get("calibration_params") or {}))


def _find_referencing(volume_node: Any, class_name: str, kind: str | None = None) -> Any:
    """The newest output node of ``class_name`` (and table kind) made from ``volume_node``."""
    scene = volume_node.GetScene()
    found = None
    for node in scene.GetNodesByClass(class_name):
        if node.GetNodeReferenceID(REF_INPUT) != volume_node.GetID():
            continue
        if kind is None or node.GetAttribute("OBMD.TableKind") == kind:
            found = node
    return found


def _next_case_id(dataset_dir: Path, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "", name) or "case"
    existing = {p.name[: -len(".nii.gz")] for p in (dataset_dir / "labelsTr").glob("*.nii.gz")}
    n = 0
    while f"{stem}_{n:03d}" in existing:
        n += 1
    return f"{stem}_{n:03d}"


def _update_dataset_json(dataset_dir: Path) -> Path:
    path = dataset_dir / "dataset.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("name", dataset_dir.name)
    data.setdefault("description", "OpportunisticBMD training cases; labels in the library schema (labels.py)")
    data["channel_names"] = {"0": "CT"}
    data["labels"] = dict(LABELS)
    data["file_ending"] = ".nii.gz"
    data["numTraining"] = len(list((dataset_dir / "labelsTr").glob("*.nii.gz")))
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Dependencies, sample data, background processing


def missing_requirements(requirements_txt: str | Path) -> list[str]:
    """Lines of a requirements file whose distribution is not installed (versions not checked)."""
    from importlib.metadata import PackageNotFoundError, distribution

    missing = []
    for line in Path(requirements_txt).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]
        try:
            distribution(name)
        except PackageNotFoundError:
            missing.append(line)
    return missing


def load_digital_patient(seed: int = 0, work_dir: str | Path | None = None, region: str = "torso") -> tuple[Any, Any]:
    """Generate a digital patient (``obmd phantom``) into the scene: (CT volume node, label segmentation).
    ``region``: "torso" (spine and hips), "spine" (smaller, faster) or "hip"."""
    import contextlib
    import io as _io
    import tempfile

    from .cli import main
    from .io import read_ct, read_labels

    out = Path(work_dir or tempfile.mkdtemp(prefix="obmd-phantom-"))
    buffer = _io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = main(["phantom", "--out", str(out), "--seed", str(seed), "--region", region])
    if rc != 0:
        raise RuntimeError(f"obmd phantom failed ({rc}): {buffer.getvalue()[-300:]}")
    ct = read_ct(out / "ct.nii.gz")
    labels = read_labels(out / "labels.nii.gz", like=ct)
    name = f"Digital patient {seed}"
    volume_node = bridge.node_from_volume(ct, name=name)
    seg_node = bridge.labels_to_segmentation(labels, volume_node, name=f"{name} labels")
    return volume_node, seg_node


def run_self_test(seed: int = 1, region: str = "spine") -> dict[str, Any]:
    """What the module's self-test does, runnable headless: a digital patient is analysed, half of
    the muscle ROI is erased as a user would, Recompute must change the muscle HU to the mean of the
    voxels left and every level's vBMD to what the muscle-fat line through them gives."""
    volume_node, seg_node = load_digital_patient(seed=seed, region=region)
    logic = BMDLogic()
    outputs = logic.analyze(volume_node, seg_node)
    ct = outputs.ct
    rows = bridge.table_rows(outputs.table_node)
    if not any(np.isfinite(r["vBMD"]) for r in rows):
        raise AssertionError("no finite vBMD in the results table")
    muscle = outputs.result.rois["muscle_roi"]
    kept = muscle.copy()
    kept[: int(np.median(np.nonzero(muscle)[0]))] = False  # erase the inferior half
    bridge.edit_segment_voxels(outputs.roi_segmentation_node, "muscle_roi", kept, ct, volume_node)
    recomputed = logic.recompute(volume_node, outputs.roi_segmentation_node, seg_node,
                                 table_node=outputs.table_node)
    if not bridge.is_edited(outputs.roi_segmentation_node, "muscle_roi"):
        raise AssertionError("the erased muscle ROI is not tagged edited")
    cal = recomputed.result.results["calibration"]
    muscle_hu = float(ct.array[kept].mean())
    if abs(cal["muscle_hu"] - muscle_hu) > 1e-3:
        raise AssertionError(f"muscle HU {cal['muscle_hu']} != {muscle_hu} (mean of the voxels left)")
    before = outputs.result.results
    if cal["method"] == "muscle-fat":
        m_d, f_d, f_hu = cal["muscle_density_mg_cm3"], cal["fat_density_mg_cm3"], cal["fat_hu"]
        for level, values in recomputed.result.results["spine"]["levels"].items():
            hu = before["spine"]["levels"][level]["trabecular_hu_mean"]
            expected = m_d + (hu - muscle_hu) * (m_d - f_d) / (muscle_hu - f_hu)
            if abs(values["vbmd_mg_cm3"] - expected) > 1e-3:
                raise AssertionError(f"{level}: vBMD {values['vbmd_mg_cm3']} != {expected} by the formula")
    return {
        "levels": [r["Level"] for r in rows],
        "muscle_hu_before": before["calibration"]["muscle_hu"],
        "muscle_hu_after": cal["muscle_hu"],
        "summary_vbmd_before": before["spine"]["summary"]["vbmd_mg_cm3"],
        "summary_vbmd_after": recomputed.result.results["spine"]["summary"]["vbmd_mg_cm3"],
    }


_PROGRESS_LINE = re.compile(r"^\[\s*([0-9.]+)%\s+[0-9.]+s\]\s*(.*)$")  # progress.TerminalProgress, no tty


class AnalysisJob:
    """``obmd analyze`` in a child process so the GUI never freezes (as SlicerMONAIAuto3DSeg runs its
    inference): inputs are written to a work folder, output lines are pumped by a reader thread and
    read by the GUI's timer with :meth:`poll`; :meth:`cancel` kills the process; :meth:`result` reads
    what ``obmd analyze`` wrote back as an ``AnalysisResult``."""

    def __init__(self, argv: list[str], work_dir: Path, ct: Volume, labels: Volume | None) -> None:
        import queue
        import subprocess
        import threading

        self.argv, self.work_dir, self.ct, self.labels = argv, work_dir, ct, labels
        self.cancelled = False
        self.lines: list[str] = []
        self.picture_files: dict[str, Path] = {}
        self._queue: queue.Queue[str] = queue.Queue()
        import os

        # The child must import this very package (an extension's folder is not on PythonSlicer's path).
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1, env=env
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, volume_node: Any, segmentation_node: Any, options: AnalysisOptions | dict | None,
              work_dir: str | Path) -> AnalysisJob:
        import shutil
        import sys

        work_dir = Path(work_dir)
        logic = BMDLogic()
        ct = bridge.volume_from_node(volume_node)
        ct_file = ct.like(ct.array)
        ct_file.metadata = {}
        write_like(ct.array, ct_file, work_dir / "ct.nii.gz")
        # the node's header (kVp, age, sex) travels as the copy's sidecar: the job reads the CT as the CLI would
        write_sidecar(ct.metadata, work_dir / "ct.nii.gz")
        python = shutil.which("PythonSlicer") or sys.executable
        argv = [python, "-m", "OpportunisticBMDLib.cli", "analyze", str(work_dir / "ct.nii.gz")]
        labels = None
        if segmentation_node is not None:
            labels = logic.labels_from_node(segmentation_node, volume_node, ct)
            write_like(labels.array.astype(np.int16), ct_file, work_dir / "labels.nii.gz")
            argv += ["--seg", str(work_dir / "labels.nii.gz")]
        argv += ["--out", str(work_dir / "out")]
        argv += _options_to_cli(options)
        return cls(argv, work_dir, ct, labels)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip())
        self.proc.wait()

    @property
    def returncode(self) -> int | None:
        if self._thread.is_alive():
            return None
        return self.proc.returncode

    def poll(self) -> list[tuple[float | None, str]]:
        """New output lines as (progress fraction or None, text)."""
        import queue

        out = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return out
            self.lines.append(line)
            match = _PROGRESS_LINE.match(line)
            out.append((float(match.group(1)) / 100.0, match.group(2)) if match else (None, line))

    def wait(self, timeout_s: float | None = None) -> int:
        self.proc.wait(timeout_s)
        self._thread.join(timeout_s)
        return self.proc.returncode

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.cancelled = True
            self.proc.kill()

    def cleanup(self) -> None:
        """Delete the work folder (inputs written for the child and its outputs)."""
        import shutil

        if self.proc.poll() is None:
            self.cancel()
            self.wait(10)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def last_error(self) -> str:
        errors = [line for line in self.lines if "error" in line.lower()]
        return (errors or self.lines or ["(no output)"])[-1]

    def result(self) -> Any:
        """The ``AnalysisResult`` written by ``obmd analyze`` (results.json and masks/*.nii.gz)."""
        from .io import read_labels
        from .pipeline import AnalysisResult

        out = self.work_dir / "out"
        results = json.loads((out / "results.json").read_text())
        rois = {
            path.name[: -len(".nii.gz")]: read_labels(path, like=self.ct).array > 0
            for path in sorted((out / "masks").glob("*.nii.gz"))
        }
        labels, keypoints, predicted = self.labels, {}, False
        if (out / "labels.nii.gz").exists():  # the models segmented the CT
            labels, predicted = read_labels(out / "labels.nii.gz", like=self.ct), True
        # Report PNGs are files here, not the HipPicture objects write_outputs expects: kept aside.
        self.picture_files = {path.stem: path for path in sorted(out.glob("*hip*.png"))}
        if (out / "keypoints.json").exists():
            levels = json.loads((out / "keypoints.json").read_text()).get("levels", {})
            keypoints = {f"{lvl} body": np.asarray(v["index_kji"]) for lvl, v in levels.items() if v.get("index_kji")}
        return AnalysisResult(results=results, rois=rois, labels=labels, keypoints=keypoints,
                              labels_predicted=predicted)


def composition_ranges_percent() -> dict[str, tuple[float, float]]:
    """``calibration_params`` key -> the range (percent) a panel accepts for it (:mod:`.calibration`)."""
    from .settings import MARROW_FAT_FRACTION_RANGE, PSOAS_FAT_FRACTION_RANGE

    return {key: (100.0 * low, 100.0 * high) for key, (low, high) in (
        ("psoas_fat_fraction", PSOAS_FAT_FRACTION_RANGE), ("marrow_fat_fraction", MARROW_FAT_FRACTION_RANGE))}


def composition_params(psoas_fat_percent: float | None, marrow_fat_percent: float | None) -> dict[str, float]:
    """``calibration_params`` from the panel's composition fields (percent; outside the accepted range,
    :func:`composition_ranges_percent`: "typical for the age", nothing set)."""
    params: dict[str, float] = {}
    given = {"psoas_fat_fraction": psoas_fat_percent, "marrow_fat_fraction": marrow_fat_percent}
    for key, (low, high) in composition_ranges_percent().items():
        if given[key] is not None and low <= given[key] <= high:
            params[key] = round(given[key] / 100.0, 4)
    return params


def _options_to_cli(options: AnalysisOptions | dict | None) -> list[str]:
    """``obmd analyze`` flags for :class:`settings.AnalysisOptions` (or a dict of its fields)."""
    return [] if options is None else make_options(options).to_argv()
