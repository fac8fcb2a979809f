"""The Slicer-facing logic, free of Qt and of ScriptedLoadableModule so it runs headless.

``OpportunisticBMD.OpportunisticBMDLogic`` (desktop Slicer) and the browser app both wrap
:class:`BMDLogic`. It converts MRML nodes with the node modules of this package (:mod:`.volumes`,
:mod:`.segments`, :mod:`.labelmaps`, :mod:`.tables`, :mod:`.markups`), runs :mod:`..pipeline`, and puts
the outputs back as nodes: a results table, a ROI segmentation (trabecular ROI per level, muscle
ROI, fat ROI), a label segmentation when the models produced the labels, and a keypoints point list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..labels import VERTEBRA_LEVELS, normalise_label_ids, vertebra_label
from ..progress import Progress, no_progress
from ..settings import AnalysisOptions
from ..volume import Volume
from . import edits, labelmaps, markups, segments, tables, volumes
from .hierarchy import place_in_study
from .options import make_options
from .recompute import RecomputeJob, model_naming_evidence

if TYPE_CHECKING:  # the pipeline loads when an analysis runs, not with the module
    from ..report_folder import ReportFolderOptions, WrittenReport

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


_options = make_options  # short name used below


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
        key = (image.GetMTime() if image is not None else 0, volumes.node_geometry(volume_node))
        cached = self._ct_cache.get(volume_node.GetID())
        if cached is None or cached[0] != key:
            self._ct_cache = {volume_node.GetID(): (key, volumes.volume_from_node(volume_node))}
        return self._ct_cache[volume_node.GetID()][1]

    def labels_from_node(self, node: Any, volume_node: Any, ct: Volume) -> Volume:
        """Our label map from a segmentation node or a label map volume node (TotalSegmentator ids or names
        are mapped to our schema)."""
        if node.IsA("vtkMRMLSegmentationNode"):
            return labelmaps.segmentation_to_labels(node, volume_node, ct)
        labels = volumes.volume_from_node(node, dtype=np.int16)
        labels.array, _mapped = normalise_label_ids(labels.array)  # a label map volume node is never the models'
        from ..io import check_same_grid

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
        from .. import pipeline

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
            outputs.labels_segmentation_node = labelmaps.labels_to_segmentation(
                result.labels, volume_node, outputs.labels_segmentation_node, name=f"{volume_node.GetName()} labels"
            )
        elif segmentation_node is not None:
            outputs.labels_segmentation_node = segmentation_node
        outputs.roi_segmentation_node = segments.rois_to_segmentation(
            result.rois, ct, volume_node, outputs.roi_segmentation_node,
            name=f"{volume_node.GetName()} BMD ROIs", overwrite_edited=overwrite_edited,
        )
        if not overwrite_edited:
            # Edited segments were kept: the numbers must come from what is in the scene.
            rois, edited = segments.read_rois(outputs.roi_segmentation_node, volume_node, ct)
            if edited:
                full = result
                result = pipeline.measure(ct, rois, options, labels=full.labels)
                result.keypoints, result.labels_predicted = full.keypoints, full.labels_predicted
        outputs.table_node = tables.results_to_table(
            result.results, outputs.table_node, name=f"{volume_node.GetName()} BMD results"
        )
        outputs.hip_table_node = tables.hip_results_to_table(
            result.results, outputs.hip_table_node, name=f"{volume_node.GetName()} hip BMD results"
        )
        keypoints = getattr(result, "keypoints", None)
        if not keypoints and result.labels is not None:
            keypoints = vertebra_centres(result.labels)
        if keypoints:
            outputs.markups_node = markups.keypoints_to_markups(
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
        place_in_study(volume_node, *nodes)

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
        from .. import pipeline

        options = _options(options)
        ct = self.ct_volume(volume_node)
        if table_node is None:
            table_node = _find_referencing(volume_node, "vtkMRMLTableNode", kind="spine")
        previous = tables.table_to_results(table_node) if table_node is not None and table_node.GetAttribute(
            tables.ATTR_RESULTS) else None
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
            edits.update_edited_tags(roi_segmentation_node, volume_node)
            if labels is None:
                raise ValueError("re-deriving ROIs needs the label segmentation")
            segments.rois_to_segmentation(
                pipeline.derive_rois(ct, labels, options), ct, volume_node, roi_segmentation_node,
                overwrite_edited=overwrite_edited,
            )
        rois, _edited = segments.read_rois(roi_segmentation_node, volume_node, ct)
        # the model's labels are a segmentation node; a label map volume node is the user's own
        segmentation = labels_segmentation_node is not None and labels_segmentation_node.IsA("vtkMRMLSegmentationNode")
        vertebrae_edited = bool(segmentation and edits.update_edited_tags(labels_segmentation_node, volume_node,
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
        table_node = tables.results_to_table(result.results, job.table_node,
                                             name=f"{volume_node.GetName()} BMD results")
        hip_table_node = _find_referencing(volume_node, "vtkMRMLTableNode", kind="hip")
        if result.results.get("hip"):  # else the hip table of the last Analyze stays as it is
            hip_table_node = tables.hip_results_to_table(
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
            from ..hip.pictures import save_hip_pictures

            files.update(save_hip_pictures(objects, Path(out_dir)))
        return files

    def save_report(self, result: Any, ct: Volume, out_dir: str | Path,
                    dicom_source_files: Sequence[str | Path] = (),
                    options: ReportFolderOptions | None = None) -> WrittenReport:
        """The folder ``obmd analyze`` writes (:func:`..report_folder.save_report_folder`: results.json,
        results.csv, masks, report.pdf, and dicom/ when the CT came from DICOM), in a new or earlier report
        folder replaced whole. ``dicom_source_files``: the series' files for a CT loaded by Slicer's DICOM
        module (:func:`.volumes.dicom_source_files`); a CT the library read from a DICOM folder names it itself."""
        from ..report_folder import save_report_folder

        return save_report_folder(result, ct, out_dir, options, dicom_source_files)

    def export_training_case(
        self,
        volume_node: Any,
        segmentation_node: Any,
        dataset_dir: str | Path,
        case_id: str | None = None,
    ) -> dict[str, Path]:
        """Append the CT and its (corrected) label map to an nnU-Net v2 raw dataset folder
        (:func:`.nnunet_export.export_training_case`)."""
        from .nnunet_export import export_training_case

        ct = self.ct_volume(volume_node)
        labels = self.labels_from_node(segmentation_node, volume_node, ct)
        if not np.any(labels.array):
            raise ValueError(f"{segmentation_node.GetName()}: no segment maps to a label of the schema")
        return export_training_case(ct, labels, dataset_dir, volume_node.GetName(), case_id)


def _find_referencing(volume_node: Any, class_name: str, kind: str | None = None) -> Any:
    """The newest output node of ``class_name`` (and table kind) made from ``volume_node``."""
    scene = volume_node.GetScene()
    found = None
    for node in scene.GetNodesByClass(class_name):
        if node.GetNodeReferenceID(REF_INPUT) != volume_node.GetID():
            continue
        if kind is None or node.GetAttribute(tables.ATTR_TABLE_KIND) == kind:
            found = node
    return found

