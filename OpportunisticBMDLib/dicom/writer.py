"""``OUT/dicom/``: ``seg.dcm``, ``sr.dcm`` and ``report_pdf.dcm`` (when ``OUT/report.pdf`` exists), in the
source CT's study and frame of reference, each in a new series; for a non-DICOM CT also ``ct/`` (the CT
as a new DICOM series the others reference: ct_series.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import generate_uid

from ..pipeline import AnalysisResult
from ..volume import Volume
from . import ct_series, pdf, seg, sources, sr

DICOM_DIR = "dicom"
SEG_NAME, SR_NAME, PDF_NAME = "seg.dcm", "sr.dcm", "report_pdf.dcm"
REPORT_PDF = "report.pdf"  # written by pipeline.write_outputs (the report package)
# Series numbers of our objects: design choice, high enough to sort after a scanner's own series
SEG_SERIES_NUMBER, SR_SERIES_NUMBER, PDF_SERIES_NUMBER = 9801, 9802, 9803


@dataclass
class DicomOutputs:
    paths: dict[str, Path] = field(default_factory=dict)  # "dicom/seg.dcm" -> path
    info: dict = field(default_factory=dict)  # results.json "dicom"

    @property
    def objects(self) -> list[Path]:
        """The files to store in a PACS (SEG, SR, PDF and a written CT series)."""
        return list(self.paths.values())


def source_for(ct: Volume, out_dir: Path, source_files: Sequence[str | Path] = ()) -> sources.SourceSeries:
    """The series the outputs reference: ``source_files`` (the series' instances, e.g. from Slicer's DICOM
    database), else the DICOM folder the CT was read from, else a CT series written into ``out_dir/dicom/ct``
    (new UIDs)."""
    if source_files:
        return sources.read_source_files(source_files)
    if from_dicom_folder(ct):
        # io's key of the series read (a blanked UID has a key of what the headers kept), else the recorded UID
        chosen = ct.metadata.get("series_key") or (ct.metadata.get("series_choice") or {}).get("series_instance_uid")
        return sources.read_source_series(ct.metadata["path"], chosen)
    return ct_series.write_ct_series(ct, out_dir / DICOM_DIR / "ct")


def from_dicom_folder(ct: Volume) -> bool:
    """True when ``ct`` was read from a DICOM folder (its metadata, kept on a Slicer node too, says which)."""
    return ct.metadata.get("format") == "dicom" and bool(ct.metadata.get("path"))


def write_dicom_outputs(result: AnalysisResult, ct: Volume, out_dir: str | Path,
                        source_files: Sequence[str | Path] = ()) -> DicomOutputs:
    """Write SEG, SR and the encapsulated PDF of ``result`` into ``out_dir/dicom``, referencing
    ``source_files`` or the DICOM folder ``ct`` was read from (:func:`source_for`); ``info`` says what was
    written and any UID that had to be made up (also added to ``result.results['dicom']``)."""
    out_dir = Path(out_dir)
    folder = out_dir / DICOM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    source = source_for(ct, out_dir, source_files)
    outputs = DicomOutputs()
    if not source_files and not from_dicom_folder(ct):  # the CT series written for a NIfTI/NRRD CT
        outputs.paths.update({f"{DICOM_DIR}/ct/{p.name}": p for p in sorted((folder / "ct").glob("*.dcm"))})
    specs = seg.segment_specs(result, (result.results.get("calibration") or {}).get("muscle_roi_source"))
    segmentation = seg.build_segmentation(specs, ct, source.datasets, series_uid=generate_uid(),
                                          sop_uid=generate_uid(), series_number=SEG_SERIES_NUMBER)
    numbers = {spec.name: n for n, spec in enumerate(specs, start=1)}
    objects = {SEG_NAME: segmentation}
    objects[SR_NAME] = sr.build_report(result.results, segmentation, numbers, source.datasets,
                                       series_uid=generate_uid(), sop_uid=generate_uid(),
                                       series_number=SR_SERIES_NUMBER)
    if (out_dir / REPORT_PDF).is_file():
        objects[PDF_NAME] = pdf.encapsulate_pdf(out_dir / REPORT_PDF, source.datasets[0], series_uid=generate_uid(),
                                                sop_uid=generate_uid(), series_number=PDF_SERIES_NUMBER)
    for name, dataset in objects.items():
        path = folder / name
        dataset.save_as(path, enforce_file_format=True)
        outputs.paths[f"{DICOM_DIR}/{name}"] = path
    outputs.info = {
        "study_instance_uid": source.study_uid,
        "frame_of_reference_uid": source.frame_of_reference_uid,
        "source_series_instance_uid": source.series_uid,
        "uids_generated": source.uids_generated,
        "objects": {name: {"series_instance_uid": str(ds.SeriesInstanceUID), "sop_instance_uid": str(ds.SOPInstanceUID)}
                    for name, ds in objects.items()},
        "segments": {spec.name: n for spec, n in zip(specs, numbers.values(), strict=True)},
        "notes": list(source.notes),
    }
    if REPORT_PDF not in [p.name for p in out_dir.iterdir()]:
        outputs.info["notes"].append("no report.pdf in the output folder: no Encapsulated PDF written")
    result.results["dicom"] = outputs.info
    return outputs
