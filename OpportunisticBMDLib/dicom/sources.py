"""The source CT series' headers, read from the folder the CT came from, to reference in SEG, SR and PDF.

Anonymised exports often blank the study, series and instance UIDs in the datasets (the shared example
series keeps them only in the file meta). Referencing then needs UIDs all the same: the SOP class and
instance are taken from the file meta; a missing study, series or frame-of-reference UID is derived
deterministically from the instance UIDs (the same folder always gets the same UIDs), and a note says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from .. import dicom_series
from ..errors import InputError

UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


@dataclass
class SourceSeries:
    """The CT slices our outputs reference (headers only, UIDs complete) and what had to be made up."""

    datasets: list[Dataset]
    notes: list[str] = field(default_factory=list)  # missing UIDs that were generated, new series made
    uids_generated: bool = False  # True when the study/series UIDs are ours, not the PACS's

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.datasets[0].FrameOfReferenceUID)


def _uid(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword) or "").strip()


def deterministic_uid(kind: str, members: list[str]) -> str:
    """A UID derived from ``members`` (instance UIDs or paths): the same inputs give the same UID."""
    return generate_uid(entropy_srcs=[kind, *sorted(members)])


def complete_uids(datasets: list[Dataset], where: str) -> list[str]:
    """Fill blank SOP class/instance UIDs from the file meta, and blank study/series/frame-of-reference UIDs
    with deterministic ones shared by all ``datasets`` (one series); returns what was filled, as notes."""
    notes = []
    filled_sop = 0
    for ds in datasets:
        meta = getattr(ds, "file_meta", None)
        for keyword, meta_keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                      ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not _uid(ds, keyword):
                value = str(meta.get(meta_keyword) or "") if meta is not None else ""
                if not value:
                    raise InputError(f"{where}: a DICOM image has no {keyword}, in its dataset or its file meta")
                setattr(ds, keyword, value)
                filled_sop += 1
    if filled_sop:
        notes.append(f"{where}: SOP Class/Instance UIDs blank in the datasets (an anonymised export); taken "
                     "from the files' meta headers")
    instances = [str(ds.SOPInstanceUID) for ds in datasets]
    for keyword in UID_KEYWORDS:
        present = {_uid(ds, keyword) for ds in datasets} - {""}
        if len(present) > 1:
            raise InputError(f"{where}: the series' images carry {len(present)} different {keyword}s")
        if present:
            value = present.pop()
        else:
            value = deterministic_uid(keyword, instances)
            notes.append(f"{where}: {keyword} blank in the source (an anonymised export); generated {value} "
                         "from the instance UIDs: a PACS holding the original will not file our objects with it")
        for ds in datasets:
            setattr(ds, keyword, value)
    return notes


def slice_position_mm(ds: Dataset) -> float:
    """Position of a slice along its normal (sorts a series from its first to its last slice)."""
    row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    return float(np.dot(np.cross(row, col), np.asarray(ds.ImagePositionPatient, float)))


def _read(path: Path, with_pixels: bool) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not with_pixels)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError):
        return None


def read_source_series(folder: str | os.PathLike[str], series_uid: str | None = None,
                       with_pixels: bool = False) -> SourceSeries:
    """The CT image datasets of ``folder`` (the series ``series_uid`` when several, as input.series_choice
    names it; else all CT images), sorted along the slice normal, their UIDs completed (:func:`complete_uids`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: the DICOM folder the CT was read from is gone: no DICOM outputs can "
                         "reference it")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return read_source_files(paths, series_uid, with_pixels, where=str(folder))


def read_source_files(paths: Sequence[str | os.PathLike[str]], series_uid: str | None = None,
                      with_pixels: bool = False, where: str | None = None) -> SourceSeries:
    """As :func:`read_source_series`, from a list of files (e.g. the instances Slicer's DICOM database holds
    for a loaded series, wherever it keeps them); ``where`` names them in notes and errors."""
    paths = [Path(p) for p in paths]
    where = where or (str(paths[0].parent) if paths else "the DICOM source files")
    datasets = []
    for path in paths:
        ds = _read(path, with_pixels)
        if ds is None or "ImagePositionPatient" not in ds:
            continue
        sop = _uid(ds, "SOPClassUID") or str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
        if sop not in dicom_series.CT_IMAGE_SOP_CLASSES:
            continue
        # the series the reader chose (dicom_series keys a series without a UID by what it kept)
        if series_uid and dicom_series._series_key(ds) != series_uid:
            continue
        datasets.append(ds)
    if not datasets:
        raise InputError(f"{where}: no CT image files to reference in the DICOM outputs")
    notes = complete_uids(datasets, where)
    datasets.sort(key=slice_position_mm)
    return SourceSeries(datasets, notes, uids_generated=any("StudyInstanceUID" in n for n in notes))


def write_series_with_uids(source: SourceSeries, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``source`` (read ``with_pixels``) with its completed UIDs into the datasets and file meta, one
    file per instance: a copy a PACS can file (e.g. the anonymised example series before upload)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in source.datasets:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
