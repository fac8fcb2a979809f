"""The browser app's workflow on trame-slicer's MRML scene, through the module's own Logic.

Every step calls :class:`..mrml.logic.BMDLogic` (the same class desktop Slicer's module wraps) and the
node modules of :mod:`..mrml`; this file only adds what a web page needs: worker threads for the slow parts of
Analyze and Recompute (progress polled into the page, Analyze cancellable), state for the page, edit
tracking (what differs from the last Analyze and from the last measurement), and view housekeeping.

Threading: VTK/MRML objects are touched on the server's event loop only. The worker threads run the
pure-numpy pipeline on :class:`..volume.Volume` copies; nodes are created or updated once they return.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import CALIBRATIONS
from ..errors import OBMDError
from ..mrml import edits, labelmaps, segment_arrays, volumes
from ..mrml.logic import AnalysisOutputs, BMDLogic
from ..settings import AnalysisOptions
from ..volume import Volume
from .downloads import ReportDownloads
from .results_view import results_view

# Segments the page offers to edit first (keys of AnalysisResult.rois), in this order.
EDITABLE_ROI_ORDER = ("muscle_roi", "fat_roi")
# Seconds between progress reads while a worker runs (the page's bar; also how soon Cancel is answered).
POLL_S = 0.25


@dataclass
class LoadedCase:
    """What the page is working on: the CT node, an optional label segmentation and the outputs."""

    name: str
    volume_node: Any
    ct: Volume
    labels_node: Any = None  # segmentation given with the CT (TotalSegmentator / ours) or from the phantom
    outputs: AnalysisOutputs | None = None
    edited_segments: set[str] = field(default_factory=set)


class AnalysisCancelled(Exception):
    """Raised in the analysis' worker thread at its next progress report after Cancel."""


class ProgressBox:
    """Latest (fraction, message) written by the worker thread, read by the event loop; :meth:`cancel`
    makes the worker's next report raise :class:`AnalysisCancelled` (the pipeline reports between steps;
    a step already running, e.g. the models' inference, finishes first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fraction, self.message = 0.0, ""
        self._cancelled = threading.Event()

    def __call__(self, fraction: float, message: str = "") -> None:
        if self._cancelled.is_set():
            raise AnalysisCancelled
        with self._lock:
            self.fraction, self.message = float(fraction), str(message)

    def read(self) -> tuple[float, str]:
        with self._lock:
            return self.fraction, self.message

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


def bind_scene_globals(slicer_app: Any) -> None:
    """Point ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` at trame-slicer's scene and logics.

    The node modules (:mod:`..mrml`) and the Logic use ``slicer.util`` helpers, which read these globals
    as in desktop Slicer."""
    import slicer

    from ..mrml.scene import install_module_shims

    tables = slicer.vtkSlicerTablesLogic()
    slicer_app.register_module_logic(tables, logic_name="Tables")
    slicer_app.tables_logic = tables  # keep a reference: the application logic holds a weak one
    slicer.mrmlScene = slicer_app.scene
    slicer.app_logic = slicer_app.app_logic
    install_module_shims(
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
        options: AnalysisOptions | None = None,
        downloads: ReportDownloads | None = None,
    ) -> None:
        self.slicer_app = slicer_app
        self.state = state
        self.out_dir = Path(out_dir)
        self.dataset_dir = Path(dataset_dir)
        self.on_outputs = on_outputs or (lambda case: None)
        self.options = options
        self.downloads = downloads  # None: Save report only writes on the server
        self.logic = BMDLogic()
        self.case: LoadedCase | None = None
        # digital patients and Recompute; an analysis gets a thread of its own (a cancelled one may still
        # be finishing its current step while the page goes on)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="obmd-work")
        self._analysis: ProgressBox | None = None
        self._analyzed: dict[str, str] = {}  # segment id -> voxel digest as the last Analyze wrote it
        self._measured: dict[str, str] = {}  # ... as the numbers on the page were measured from
        self._segment_digests = edits.SegmentDigests()
        self.reset_state()

    # ----------------------------------------------------------------------------- page state
    def reset_state(self) -> None:
        s = self.state
        s.obmd_case_name = ""
        s.obmd_busy = False
        s.obmd_busy_task = ""  # "analyze" | "recompute" | "patient" while obmd_busy
        s.obmd_cancelling = False
        s.obmd_progress = 0.0
        s.obmd_progress_message = ""
        s.obmd_has_results = False
        s.obmd_stale = False
        s.obmd_edited = []
        s.obmd_deleted = []
        s.obmd_confirm_delete = None
        s.obmd_view = results_view(None)
        s.obmd_message = "Load a CT, then press Analyze."
        s.obmd_error = ""
        s.obmd_last_report = ""
        s.obmd_report_urls = {}  # the last saved report of the results shown: {pdf, zip, name} download URLs
        s.obmd_hip_pictures = []  # [{side, src}]: the hips' DXA-like projections as PNG data URLs
        s.obmd_last_export = ""
        s.obmd_roi_segments = []
        s.obmd_calibration_methods = calibration_methods()

    def _error(self, text: str) -> None:
        self.state.obmd_error = text
        self.state.obmd_message = ""

    def _info(self, text: str) -> None:
        self.state.obmd_error = ""
        self.state.obmd_message = text

    def _set_busy(self, task: str, message: str = "") -> None:
        self.state.obmd_busy = bool(task)
        self.state.obmd_busy_task = task
        self.state.obmd_progress, self.state.obmd_progress_message = 0.0, message

    async def _show_busy(self, task: str, message: str) -> None:
        """Busy state to the page before a step that may hold the event loop (MRML reads and writes)."""
        self._set_busy(task, message)
        self.state.flush()
        await asyncio.sleep(0.05)  # let the websocket carry the state out first

    # ----------------------------------------------------------------------------- loading
    def load_volume(self, ct: Volume, name: str, labels: Volume | None = None) -> LoadedCase:
        """Put a CT (and optional label map of our schema on its grid) into a fresh scene."""
        self._forget_edits()
        self.slicer_app.scene.Clear(False)
        volume_node = volumes.node_from_volume(ct, name=name)  # its header (kVp, age, sex) as node attributes
        labels_node = None
        if labels is not None:
            labels_node = labelmaps.labels_to_segmentation(labels, volume_node, name=f"{name} labels")
        self.case = LoadedCase(name=name, volume_node=volume_node, ct=volumes.volume_from_node(volume_node),
                               labels_node=labels_node)
        self.reset_state()
        self.state.obmd_case_name = name
        self._info(f"Loaded {name}. Press Analyze." + (" (label map given)" if labels_node else ""))
        self.on_outputs(self.case)
        return self.case

    def use_volume_node(self, volume_node: Any) -> LoadedCase:
        """A CT the page loaded itself (file upload through trame-slicer's loader): its header is read from
        the uploaded file (DICOM tags, or a JSON sidecar uploaded with it) as ``obmd analyze`` reads it."""
        self._forget_edits()
        from .cases import case_name, header_of_file

        storage = volume_node.GetStorageNode()
        if storage is not None and storage.GetFileName():
            volumes.set_header_attributes(volume_node, header_of_file(storage.GetFileName()))
        name = case_name(Path(volume_node.GetName()))
        volume_node.SetName(name)
        self.case = LoadedCase(name=name, volume_node=volume_node, ct=volumes.volume_from_node(volume_node))
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

        self._set_busy("patient", f"Generating digital patient {seed}")
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
                self._set_busy("")

    # ----------------------------------------------------------------------------- analyze
    async def analyze(self) -> None:
        """Full analysis: the pipeline in a worker thread, progress polled into the page, then nodes.
        :meth:`cancel_analysis` stops waiting at once; nothing of a cancelled analysis is shown."""
        case = self.case
        if case is None:
            self._error("No CT loaded.")
            return
        if self.state.obmd_busy or self.state.obmd_cancelling:
            return
        from .. import pipeline
        from ..mrml.options import make_options

        options = make_options(self.options)
        box = self._analysis = ProgressBox()
        self._set_busy("analyze", "Starting")
        self._info("Analyzing…")
        self.state.flush()
        future: asyncio.Future | None = None
        try:
            labels = None
            if case.labels_node is not None:
                labels = self.logic.labels_from_node(case.labels_node, case.volume_node, case.ct)
            # the header travels with the copy (kVp, age, sex): pipeline.analyze applies it as for `obmd analyze`
            ct = case.ct.like(case.ct.array.copy(), **case.ct.metadata)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(None, pipeline.analyze, ct, labels, options, box)
            while not future.done() and not box.cancelled:
                await asyncio.sleep(POLL_S)
                fraction, message = box.read()
                with self.state:
                    self.state.obmd_progress = round(100.0 * fraction, 1)
                    self.state.obmd_progress_message = message
            if box.cancelled:
                self._after_cancel(future)
                return
            result = await future
            if self.case is not case:
                return  # another CT was loaded meanwhile
            self._forget_edits()
            case.outputs = self.logic.analyze(
                case.volume_node, case.labels_node, options, outputs=case.outputs, result=result
            )
            case.labels_node = case.labels_node or case.outputs.labels_segmentation_node
            self._start_tracking_edits()
            self._publish(case.outputs.result.results, stale=False)
            self._info("Analysis done. Edit the ROIs if needed, then Recompute.")
            self.on_outputs(case)
        except AnalysisCancelled:
            self._after_cancel(future)
        except OBMDError as exc:
            self._error(str(exc))
        except Exception as exc:  # the page must say what failed, the server must keep running
            traceback.print_exc()
            self._error(f"Analysis failed: {exc}")
        finally:
            if self._analysis is box:
                self._analysis = None
            with self.state:
                self._set_busy("")
                self.state.obmd_progress = 100.0 if self.state.obmd_has_results else 0.0

    def cancel_analysis(self) -> None:
        """Stop the running analysis: the page is usable at once, its worker stops at its next step."""
        if self._analysis is not None:
            self._analysis.cancel()

    def _after_cancel(self, future: asyncio.Future | None) -> None:
        """The analysis was cancelled: say so; Analyze stays off until its worker has really stopped."""
        kept = " The results shown are from the previous analysis." if self.state.obmd_has_results else ""
        self._info("Analysis cancelled: nothing from it is shown." + kept)
        if future is None or future.done():
            return
        self.state.obmd_cancelling = True

        def stopped(done: asyncio.Future) -> None:
            if not done.cancelled():
                done.exception()  # AnalysisCancelled (or a late error): read so asyncio does not log it
            with self.state:
                self.state.obmd_cancelling = False

        future.add_done_callback(stopped)

    # ----------------------------------------------------------------------------- edits
    # The edit check of mrml.edits (a digest of each ROI segment's voxels), compared with two snapshots:
    # what the last Analyze wrote ("edited", shown on the case and the segment; back to it by Undo: not
    # edited) and what the numbers on the page were measured from ("out of date"). A deleted segment counts
    # as edited. The app calls refresh_edits once trame-slicer's editor has settled after a change
    # (strokes, delete, undo), instead of observing the segmentation as desktop Slicer does
    # (edits.watch_edits): see mrml.edits for why.
    def _start_tracking_edits(self) -> None:
        """After Analyze: segments the user had edited and Analyze kept stay edited; the rest is the base."""
        current = self._digests()
        seg_node = self._roi_node()
        self._analyzed = {s: d for s, d in current.items() if not edits.is_edited(seg_node, s)}
        self._measured = dict(current)
        self._update_edit_state(current)

    def _forget_edits(self) -> None:
        self._analyzed, self._measured = {}, {}
        self._segment_digests.clear()

    def _roi_node(self) -> Any:
        case = self.case
        return case.outputs.roi_segmentation_node if case is not None and case.outputs is not None else None

    def _digests(self) -> dict[str, str]:
        """Voxel digest of every segment of the ROI segmentation (:class:`..mrml.edits.SegmentDigests`:
        recomputed only where a labelmap changed)."""
        seg_node = self._roi_node()
        if seg_node is None:
            return {}
        return self._segment_digests(seg_node, self.case.volume_node)

    def refresh_edits(self) -> bool:
        """Compare the ROI segments with the last Analyze and the last measurement; update the page and the
        segments' ``OBMD.Edited`` tags. True when what the page shows changed."""
        if self._roi_node() is None or not self._measured:
            return False
        before = (self.state.obmd_stale, list(self.state.obmd_edited), list(self.state.obmd_deleted))
        self._update_edit_state(self._digests())
        return before != (self.state.obmd_stale, list(self.state.obmd_edited), list(self.state.obmd_deleted))

    def _update_edit_state(self, current: dict[str, str]) -> None:
        seg_node = self._roi_node()
        edited = {s for s, d in self._analyzed.items() if current.get(s) != d} | (set(current) - set(self._analyzed))
        for segment_id in current:  # Undo back to what Analyze wrote: no longer edited
            if edits.is_edited(seg_node, segment_id) != (segment_id in edited):
                edits.set_edited(seg_node, segment_id, segment_id in edited)
        stale = current != self._measured
        self.case.edited_segments = edited
        self.state.obmd_edited = sorted(edited)
        self.state.obmd_deleted = sorted(set(self._analyzed) - set(current))
        self.state.obmd_roi_segments = self.roi_segment_items()
        if stale != self.state.obmd_stale and not self.state.obmd_busy:
            self.state.obmd_stale = stale
            if stale:
                self._info("ROIs edited: results are out of date. Press Recompute.")
            else:
                self._info("ROIs as measured: the results are up to date.")

    def check_edit(self, segment_id: str) -> bool:
        """True when ``segment_id`` differs from what the page's numbers were measured from (the page state
        is refreshed for every segment)."""
        if self.case is None or self.case.outputs is None or self.state.obmd_busy:
            return False
        self.refresh_edits()
        digest = self._digests().get(segment_id)
        return segment_id in self._measured and digest != self._measured[segment_id]

    def ask_delete_segment(self, segment_id: str) -> None:
        """The editor's trash icon: ask first (the page shows ``obmd_confirm_delete``)."""
        seg_node = self._roi_node()
        segment = seg_node.GetSegmentation().GetSegment(segment_id) if seg_node is not None else None
        if segment is None or self.state.obmd_busy:
            return
        self.state.obmd_confirm_delete = {"id": segment_id, "name": segment.GetName()}

    def confirm_delete_segment(self, remove: Callable[[str], None]) -> None:
        """Delete the segment the page asked about with ``remove`` (the editor's own removal: undoable)."""
        asked = self.state.obmd_confirm_delete
        self.state.obmd_confirm_delete = None
        if asked and not self.state.obmd_busy:
            remove(asked["id"])
            self.refresh_edits()

    def cancel_delete_segment(self) -> None:
        self.state.obmd_confirm_delete = None

    # ----------------------------------------------------------------------------- recompute
    async def recompute(self, recompute_hip: bool | None = None) -> None:
        """Measure again from the ROI segments as they are now (no models); the hip too (seconds) when the
        calibration line changed (``BMDLogic.recompute``) or ``recompute_hip``. The page is busy meanwhile:
        buttons off, a progress bar; the measuring runs in a worker thread."""
        case = self.case
        if case is None or case.outputs is None:
            self._error("Analyze first.")
            return
        if self.state.obmd_busy:
            return
        await self._show_busy("recompute", "Recomputing")
        try:
            job = self.logic.prepare_recompute(
                case.volume_node, case.outputs.roi_segmentation_node, case.labels_node, self.options,
                table_node=case.outputs.table_node, recompute_hip=recompute_hip,
            )
            measured = self._digests()  # the voxels the job read (edits made while it runs stay "out of date")
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, job.measure)
            if self.case is not case:
                return
            previous = case.outputs.result
            case.outputs = self.logic.finish_recompute(job, result)
            if not job.hip_recomputed and previous is not None:  # the hip carried over: its pictures too
                result.pictures.update({k: v for k, v in previous.pictures.items() if k.startswith("hip_")})
            self._measured = measured
            self._publish(case.outputs.result.results, stale=False)
            self._info("Recomputed from the edited ROIs." if case.edited_segments else "Recomputed.")
        except OBMDError as exc:
            self._error(str(exc))
        except Exception as exc:
            traceback.print_exc()
            self._error(f"Recompute failed: {exc}")
        finally:
            with self.state:
                self._set_busy("")
                if self.case is case and case.outputs is not None:
                    self._update_edit_state(self._digests())

    async def set_calibration(self, method: str) -> None:
        """Calibration method for the next Analyze/Recompute; recomputes at once when results exist."""
        from ..mrml.options import make_options

        options = make_options(self.options)
        if options.calibration == method or self.state.obmd_busy:
            return
        options = replace(options, calibration=method)
        await self._calibration_changed(options)

    async def set_composition(self, psoas_fat_percent: float | str | None,
                              marrow_fat_percent: float | str | None) -> None:
        """The patient's psoas and marrow fat (percent; blank or out of range: typical for the age), e.g.
        from a water-fat MRI: the calibration uses them and their error leaves the stated SD. Recomputes
        at once when results exist."""
        from ..mrml.options import composition_params, composition_ranges_percent, make_options

        def number(value: float | str | None) -> float | None:
            try:
                return None if value in (None, "") else float(value)
            except (TypeError, ValueError):
                return None

        if self.state.obmd_busy:
            return
        psoas, marrow = number(psoas_fat_percent), number(marrow_fat_percent)
        ranges = composition_ranges_percent()
        for value, given, what, (low, high) in (
                (psoas, psoas_fat_percent, "Psoas fat", ranges["psoas_fat_fraction"]),
                (marrow, marrow_fat_percent, "Marrow fat", ranges["marrow_fat_fraction"])):
            if given not in (None, "") and (value is None or not low <= value <= high):
                self._error(f"{what} {given!r}: a percentage from {low:g} to {high:g} (blank: typical for the age)")
                return
        options = make_options(self.options)
        given = composition_params(psoas, marrow)
        changed = options.with_calibration(psoas_fat_fraction=given.get("psoas_fat_fraction"),
                                           marrow_fat_fraction=given.get("marrow_fat_fraction"))
        if changed == options:
            return
        await self._calibration_changed(changed)

    async def _calibration_changed(self, options: AnalysisOptions) -> None:
        """Use ``options`` from now on; with results on the page, recompute them, the hip included (another
        psoas fat under a pad moves the hip's anchor, not the line)."""
        self.options = options
        if self.case is not None and self.case.outputs is not None:
            await self.recompute(recompute_hip=True)

    # ----------------------------------------------------------------------------- outputs
    async def save_report(self) -> Path | None:
        case = self.case
        if case is None or case.outputs is None:
            self._error("Analyze first.")
            return None
        if self.state.obmd_busy:
            return None
        if self.state.obmd_stale:
            await self.recompute()
            if self.state.obmd_stale or self.state.obmd_error:
                return None  # never a report of numbers the page calls out of date
        from ..output_folder import new_report_folder

        out_dir = new_report_folder(self.out_dir, case.name)
        try:  # the CT's node names the DICOM folder it was read from: dicom/ is written as obmd analyze does
            written = self.logic.save_report(case.outputs.result, case.outputs.ct or case.ct, out_dir)
        except OBMDError as exc:
            self._error(f"Saving the report failed: {exc}")
            return None
        except Exception as exc:
            traceback.print_exc()
            self._error(f"Saving the report failed: {exc}")
            return None
        self.state.obmd_last_report = str(out_dir)
        self.state.obmd_report_urls = self.downloads.offer(out_dir) if self.downloads is not None else {}
        dicom = f" with DICOM {', '.join(written.dicom_files)}" if written.dicom_files else ""
        notes = "".join(f" Note: {note}" for note in written.notes)
        self._info(f"Report saved: {out_dir} ({len(written.files)} files{dicom}).{notes}")
        return out_dir

    def export_training_case(self) -> dict[str, Path] | None:
        """CT + corrected label map into the nnU-Net v2 raw dataset (``obmd train``'s input)."""
        case = self.case
        if case is None or case.labels_node is None:
            self._error("Analyze first: the export needs the label segmentation.")
            return None
        if self.state.obmd_busy:
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
            self.state.obmd_hip_pictures = hip_picture_items(self.case.outputs.result.pictures
                                                             if self.case and self.case.outputs else {})
            self.state.obmd_report_urls = {}  # a saved report no longer shows these numbers
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
        if case.outputs.roi_segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            return None
        mask = segment_arrays.segment_mask(case.outputs.roi_segmentation_node, segment_id, case.volume_node)
        idx = np.argwhere(mask)
        if not len(idx):
            return None
        k, j, i = idx.mean(axis=0)
        import vtk

        ijk_to_ras = vtk.vtkMatrix4x4()
        case.volume_node.GetIJKToRASMatrix(ijk_to_ras)
        return np.array(ijk_to_ras.MultiplyPoint((float(i), float(j), float(k), 1.0))[:3])


def hip_picture_items(pictures: dict[str, Any]) -> list[dict[str, str]]:
    """The hips' DXA-like projections with their regions (the report's pictures) as PNG data URLs, right first."""

    from ..hip.analysis import HipPicture
    from ..report.figures import hip_png

    hips = {pic.side: pic for pic in pictures.values() if isinstance(pic, HipPicture)}
    return [{"side": side, "src": "data:image/png;base64," + base64.b64encode(hip_png(hips[side])).decode("ascii")}
            for side in ("right", "left") if side in hips]


def calibration_methods() -> list[dict[str, str]]:
    """Methods the page offers, each with its registered title and what its numbers rest on (``subtitle``,
    shown under the title in the drop-down; a category can flip with the method). Methods that need a
    scanned phantom's line: CLI and Slicer only (the page takes no line)."""
    return [{"value": m.name, "title": m.title, "subtitle": m.validation}
            for m in CALIBRATIONS.values() if not m.needs_phantom_line]
