"""The browser app's workflow on trame-slicer's MRML scene, through the module's own Logic.

Every step calls :class:`..slicer_logic.BMDLogic` (the same class desktop Slicer's module wraps) and
:mod:`..mrml_bridge`; this file only adds what a web page needs: a worker thread for the slow part of
Analyze (progress polled into the page), state for the page, and view housekeeping (which segmentation
the segment editor edits, slices centred on a segment).

Threading: VTK/MRML objects are touched on the server's event loop only. The worker thread runs the
pure-numpy pipeline on a :class:`..volume.Volume` copy; nodes are created once it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import mrml_bridge as bridge
from ..errors import OBMDError
from ..slicer_logic import AnalysisOutputs, BMDLogic
from ..volume import Volume
from .results_view import results_view

# Segments the page offers to edit first (keys of AnalysisResult.rois), in this order.
EDITABLE_ROI_ORDER = ("muscle_roi", "fat_roi")


@dataclass
class LoadedCase:
    """What the page is working on: the CT node, an optional label segmentation and the outputs."""

    name: str
    volume_node: Any
    ct: Volume
    labels_node: Any = None  # segmentation given with the CT (TotalSegmentator / ours) or from the phantom
    outputs: AnalysisOutputs | None = None
    edited_segments: set[str] = field(default_factory=set)


class ProgressBox:
    """Latest (fraction, message) written by the worker thread, read by the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fraction, self.message = 0.0, ""

    def __call__(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self.fraction, self.message = float(fraction), str(message)

    def read(self) -> tuple[float, str]:
        with self._lock:
            return self.fraction, self.message


def bind_scene_globals(slicer_app: Any) -> None:
    """Point ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` at trame-slicer's scene and logics.

    The bridge and the Logic use ``slicer.util`` helpers, which read these globals as in desktop Slicer."""
    import slicer

    from ..mrml_scene import _install_module_shims

    tables = slicer.vtkSlicerTablesLogic()
    slicer_app.register_module_logic(tables, logic_name="Tables")
    slicer_app.tables_logic = tables  # keep a reference: the application logic holds a weak one
    slicer.mrmlScene = slicer_app.scene
    slicer.app_logic = slicer_app.app_logic
    _install_module_shims(
        {
            "Colors": slicer_app.color_logic,
            "Volumes": slicer_app.volumes_logic,
            "Markups": slicer_app.markups_logic._logic,
            "Segmentations": slicer_app.segmentations_logic,
            "SubjectHierarchy": slicer_app.subject_hierarchy_logic,
            "Terminologies": slicer_app.terminologies_logic,
            "Tables": tables,
        }
    )


class Workflow:
    """Load → Analyze → edit → Recompute → Save report / Export training case, for one page.

    ``state`` is the trame state (a dict-like with ``flush``); ``on_outputs(case)`` is called after nodes
    change so the app can show them (views, segment editor)."""

    def __init__(
        self,
        slicer_app: Any,
        state: Any,
        out_dir: Path,
        dataset_dir: Path,
        on_outputs: Callable[[LoadedCase], None] | None = None,
        options: Any = None,
    ) -> None:
        self.slicer_app = slicer_app
        self.state = state
        self.out_dir = Path(out_dir)
        self.dataset_dir = Path(dataset_dir)
        self.on_outputs = on_outputs or (lambda case: None)
        self.options = options
        self.logic = BMDLogic()
        self.case: LoadedCase | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="obmd-analyze")
        self._snapshot: dict[str, str] = {}
        self.reset_state()

    # ----------------------------------------------------------------------------- page state
    def reset_state(self) -> None:
        s = self.state
        s.obmd_case_name = ""
        s.obmd_busy = False
        s.obmd_progress = 0.0
        s.obmd_progress_message = ""
        s.obmd_has_results = False
        s.obmd_stale = False
        s.obmd_edited = []
        s.obmd_view = results_view(None)
        s.obmd_message = "Load a CT, then press Analyze."
        s.obmd_error = ""
        s.obmd_last_report = ""
        s.obmd_last_export = ""
        s.obmd_roi_segments = []
        s.obmd_calibration_methods = calibration_methods()

    def _error(self, text: str) -> None:
        self.state.obmd_error = text
        self.state.obmd_message = ""

    def _info(self, text: str) -> None:
        self.state.obmd_error = ""
        self.state.obmd_message = text

    # ----------------------------------------------------------------------------- loading
    def load_volume(self, ct: Volume, name: str, labels: Volume | None = None) -> LoadedCase:
        """Put a CT (and optional label map of our schema on its grid) into a fresh scene."""
        self._stop_watching_edits()
        self.slicer_app.scene.Clear(False)
        volume_node = bridge.node_from_volume(ct, name=name)
        labels_node = None
        if labels is not None:
            labels_node = bridge.labels_to_segmentation(labels, volume_node, name=f"{name} labels")
        self.case = LoadedCase(name=name, volume_node=volume_node, ct=bridge.volume_from_node(volume_node),
                               labels_node=labels_node)
        self.reset_state()
        self.state.obmd_case_name = name
        self._info(f"Loaded {name}. Press Analyze." + (" (label map given)" if labels_node else ""))
        self.on_outputs(self.case)
        return self.case

    def use_volume_node(self, volume_node: Any) -> LoadedCase:
        """A CT the page loaded itself (file upload through trame-slicer's loader)."""
        self._stop_watching_edits()
        from .cases import case_name

        name = case_name(Path(volume_node.GetName()))
        volume_node.SetName(name)
        self.case = LoadedCase(name=name, volume_node=volume_node, ct=bridge.volume_from_node(volume_node))
        self.reset_state()
        self.state.obmd_case_name = self.case.name
        self._info(f"Loaded {self.case.name}. Press Analyze (the models segment the CT).")
        self.on_outputs(self.case)
        return self.case

    async def load_digital_patient(self, seed: int, spacing_mm: float | None = None) -> None:
        """Generate digital patient ``seed`` in the worker thread (seconds), then show it."""
        if self.state.obmd_busy:
            return
        from .cases import load_phantom_case

        self.state.obmd_busy = True
        self.state.obmd_progress, self.state.obmd_progress_message = 0.0, f"Generating digital patient {seed}"
        self.state.flush()
        try:
            loop = asyncio.get_running_loop()
            ct, labels, name = await loop.run_in_executor(
                self._executor, load_phantom_case, int(seed), "torso", spacing_mm
            )
            self.load_volume(ct, name, labels)
        except Exception as exc:
            traceback.print_exc()
            self._error(f"Generating the digital patient failed: {exc}")
        finally:
            with self.state:
                self.state.obmd_busy = False

    # ----------------------------------------------------------------------------- analyze
    async def analyze(self) -> None:
        """Full analysis: the pipeline in a worker thread, progress polled into the page, then nodes."""
        case = self.case
        if case is None:
            self._error("No CT loaded.")
            return
        if self.state.obmd_busy:
            return
        from .. import pipeline
        from ..slicer_logic import make_options

        options = make_options(self.options)
        box = ProgressBox()
        self.state.obmd_busy = True
        self.state.obmd_progress, self.state.obmd_progress_message = 0.0, "Starting"
        self._info("Analyzing…")
        self.state.flush()
        try:
            labels = None
            if case.labels_node is not None:
                labels = self.logic.labels_from_node(case.labels_node, case.volume_node, case.ct)
            ct = case.ct.like(case.ct.array.copy())
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, pipeline.analyze, ct, labels, options, box)
            while not future.done():
                await asyncio.sleep(0.25)
                fraction, message = box.read()
                with self.state:
                    self.state.obmd_progress = round(100.0 * fraction, 1)
                    self.state.obmd_progress_message = message
            result = await future
            self._stop_watching_edits()
            case.outputs = self.logic.analyze(
                case.volume_node, case.labels_node, options, outputs=case.outputs, result=result
            )
            case.labels_node = case.labels_node or case.outputs.labels_segmentation_node
            self._watch_edits()
            self._publish(case.outputs.result.results, stale=False)
            self._info("Analysis done. Edit the ROIs if needed, then Recompute.")
            self.on_outputs(case)
        except OBMDError as exc:
            self._error(str(exc))
        except Exception as exc:  # the page must say what failed, the server must keep running
            traceback.print_exc()
            self._error(f"Analysis failed: {exc}")
        finally:
            with self.state:
                self.state.obmd_busy = False
                self.state.obmd_progress = 100.0 if self.state.obmd_has_results else 0.0

    # ----------------------------------------------------------------------------- edits
    # Edits are noticed by comparing the edited segment's voxels with a snapshot taken when the numbers
    # were last measured (the app calls check_edit after trame-slicer's editor modified the segmentation).
    # bridge.watch_edits is not used here: its VTK_STRING call-data observer crashes when trame-slicer's
    # editor toggles closed surfaces (SegmentModified then carries no string).
    def _watch_edits(self) -> None:
        self._snapshot = {}
        seg_node = self.case.outputs.roi_segmentation_node if self.case and self.case.outputs else None
        if seg_node is None:
            return
        for segment_id in seg_node.GetSegmentation().GetSegmentIDs():
            self._snapshot[segment_id] = self._digest(segment_id)

    def _stop_watching_edits(self) -> None:
        self._snapshot = {}

    def _digest(self, segment_id: str) -> str:
        mask = bridge.segment_mask(self.case.outputs.roi_segmentation_node, segment_id, self.case.volume_node)
        return hashlib.sha1(np.packbits(mask).tobytes()).hexdigest()

    def check_edit(self, segment_id: str) -> bool:
        """True (and results marked out of date, segment tagged edited) if the segment's voxels changed."""
        case = self.case
        if case is None or case.outputs is None or self.state.obmd_busy or segment_id not in self._snapshot:
            return False
        if self._digest(segment_id) == self._snapshot[segment_id]:
            return False
        bridge.set_edited(case.outputs.roi_segmentation_node, segment_id)
        self._on_edit(segment_id)
        return True

    def _on_edit(self, segment_id: str) -> None:
        if self.case is None:
            return
        self.case.edited_segments.add(segment_id)
        self.state.obmd_stale = True
        self.state.obmd_edited = sorted(self.case.edited_segments)
        self._info("ROIs edited: results are out of date. Press Recompute.")

    # ----------------------------------------------------------------------------- recompute
    def recompute(self, recompute_hip: bool | None = None) -> None:
        """Measure again from the ROI segments as they are now (no models, about a second); the hip too
        (seconds) when the calibration line changed (``BMDLogic.recompute``) or ``recompute_hip``."""
        case = self.case
        if case is None or case.outputs is None:
            self._error("Analyze first.")
            return
        try:
            case.outputs = self.logic.recompute(
                case.volume_node, case.outputs.roi_segmentation_node, case.labels_node, self.options,
                table_node=case.outputs.table_node, recompute_hip=recompute_hip,
            )
            self._watch_edits()
            self._publish(case.outputs.result.results, stale=False)
            self._info("Recomputed from the edited ROIs." if case.edited_segments else "Recomputed.")
        except OBMDError as exc:
            self._error(str(exc))
        except Exception as exc:
            traceback.print_exc()
            self._error(f"Recompute failed: {exc}")

    def set_calibration(self, method: str) -> None:
        """Calibration method for the next Analyze/Recompute; recomputes at once when results exist."""
        from ..slicer_logic import make_options

        options = make_options(self.options)
        if options.calibration == method:
            return
        options.calibration = method
        self._calibration_changed(options)

    def set_composition(self, psoas_fat_percent: float | str | None, marrow_fat_percent: float | str | None) -> None:
        """The patient's psoas and marrow fat (percent; blank or out of range: typical for the age), e.g.
        from a water-fat MRI: the calibration uses them and their error leaves the stated SD. Recomputes
        at once when results exist."""
        from ..slicer_logic import composition_params, composition_ranges_percent, make_options

        def number(value: float | str | None) -> float | None:
            try:
                return None if value in (None, "") else float(value)
            except (TypeError, ValueError):
                return None

        psoas, marrow = number(psoas_fat_percent), number(marrow_fat_percent)
        ranges = composition_ranges_percent()
        for value, given, what, (low, high) in (
                (psoas, psoas_fat_percent, "Psoas fat", ranges["psoas_fat_fraction"]),
                (marrow, marrow_fat_percent, "Marrow fat", ranges["marrow_fat_fraction"])):
            if given not in (None, "") and (value is None or not low <= value <= high):
                self._error(f"{what} {given!r}: a percentage from {low:g} to {high:g} (blank: typical for the age)")
                return
        options = make_options(self.options)
        params = {k: v for k, v in (options.calibration_params or {}).items()
                  if k not in ("psoas_fat_fraction", "marrow_fat_fraction")}
        params.update(composition_params(psoas, marrow))
        if params == (options.calibration_params or {}):
            return
        options.calibration_params = params
        self._calibration_changed(options)

    def _calibration_changed(self, options: Any) -> None:
        """Use ``options`` from now on; with results on the page, recompute them, the hip included (another
        psoas fat under a pad moves the hip's anchor, not the line)."""
        self.options = options
        if self.case is not None and self.case.outputs is not None and not self.state.obmd_busy:
            self.recompute(recompute_hip=True)

    # ----------------------------------------------------------------------------- outputs
    def save_report(self) -> Path | None:
        case = self.case
        if case is None or case.outputs is None:
            self._error("Analyze first.")
            return None
        if self.state.obmd_stale:
            self.recompute()
        from ..output_folder import new_report_folder

        out_dir = new_report_folder(self.out_dir, case.name)
        try:
            files = self.logic.save_report(case.outputs.result, case.outputs.ct or case.ct, out_dir)
        except Exception as exc:
            traceback.print_exc()
            self._error(f"Saving the report failed: {exc}")
            return None
        self.state.obmd_last_report = str(out_dir)
        self._info(f"Report saved: {out_dir} ({len(files)} files)")
        return out_dir

    def export_training_case(self) -> dict[str, Path] | None:
        """CT + corrected label map into the nnU-Net v2 raw dataset (``obmd train``'s input)."""
        case = self.case
        if case is None or case.labels_node is None:
            self._error("Analyze first: the export needs the label segmentation.")
            return None
        try:
            files = self.logic.export_training_case(case.volume_node, case.labels_node, self.dataset_dir)
        except Exception as exc:
            traceback.print_exc()
            self._error(f"Export failed: {exc}")
            return None
        self.state.obmd_last_export = str(files["label"])
        self._info(f"Training case exported: {files['image'].name} + {files['label'].name} in {self.dataset_dir}")
        return files

    def _publish(self, results: dict, stale: bool) -> None:
        with self.state:
            self.state.obmd_view = results_view(results)
            self.state.obmd_has_results = True
            self.state.obmd_stale = stale
            self.state.obmd_edited = sorted(self.case.edited_segments) if self.case else []
            self.state.obmd_roi_segments = self.roi_segment_items()

    def roi_segment_items(self) -> list[dict[str, str]]:
        """ROI segments for the "edit" list: id, display name, color; muscle and fat first."""
        case = self.case
        if case is None or case.outputs is None or case.outputs.roi_segmentation_node is None:
            return []
        segmentation = case.outputs.roi_segmentation_node.GetSegmentation()
        ids = list(segmentation.GetSegmentIDs())
        ids.sort(key=lambda s: (EDITABLE_ROI_ORDER.index(s) if s in EDITABLE_ROI_ORDER else len(EDITABLE_ROI_ORDER), s))
        items = []
        for segment_id in ids:
            segment = segmentation.GetSegment(segment_id)
            rgb = segment.GetColor()
            color = "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb)
            items.append({"id": segment_id, "name": segment.GetName(), "color": color})
        return items

    # ----------------------------------------------------------------------------- views
    def segment_centre_ras(self, segment_id: str) -> np.ndarray | None:
        """Centre (RAS mm) of a ROI segment's voxels, to centre the slice views on it."""
        case = self.case
        if case is None or case.outputs is None:
            return None
        mask = bridge.segment_mask(case.outputs.roi_segmentation_node, segment_id, case.volume_node)
        idx = np.argwhere(mask)
        if not len(idx):
            return None
        k, j, i = idx.mean(axis=0)
        import vtk

        ijk_to_ras = vtk.vtkMatrix4x4()
        case.volume_node.GetIJKToRASMatrix(ijk_to_ras)
        return np.array(ijk_to_ras.MultiplyPoint((float(i), float(j), float(k), 1.0))[:3])


def calibration_methods() -> list[dict[str, str]]:
    """Methods the page offers ("phantom" needs a scanned phantom's slope and intercept: CLI only)."""
    from ..calibration import CALIBRATIONS

    titles = {
        "auto": "auto (in-scan pad if found, else muscle-fat)",
        "inscan": "inscan (calibration pad scanned with the patient)",
        "muscle-fat": "muscle-fat (psoas + subcutaneous fat)",
        "internal-multi": "internal-multi (several tissues, robust fit)",
        "hu": "hu (HU only, no vBMD)",
    }
    return [{"value": name, "title": titles.get(name, name)} for name in CALIBRATIONS if name != "phantom"]
