"""A CT series written from a Volume, for NIfTI/NRRD input (``obmd analyze --dicom-out``): SEG, SR and PDF
must reference images, and without a DICOM source there are none. Every UID is new (a warning says so):
a PACS files these objects as a new study, never with the patient's original CT.

Slices follow the library's LPS grid (volume.py): frame ``k`` is ``array[k]``, rows run along ``j``
(anterior to posterior), columns along ``i`` (right to left), so the SEG frames need no reorientation.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .. import __version__
from ..volume import Volume
from .sources import SourceSeries

NEW_UIDS_WARNING = ("DICOM outputs for a non-DICOM CT: the CT is written as a new DICOM series (OUT/dicom/ct/) "
                    "with new study, series and frame-of-reference UIDs; a PACS files them as a new study, not "
                    "with the patient's original images")
HU_INT16_RANGE = (-32768, 32767)


def _header_value(metadata: dict, key: str) -> str:
    value = metadata.get(key)
    return "" if value in (None, "") else str(value)


def _base_dataset(ct: Volume, study_uid: str, series_uid: str, frame_uid: str, now: _dt.datetime) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.Modality = "CT"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    sex = _header_value(ct.metadata, "patient_sex").upper()[:1]
    ds.PatientSex = sex if sex in ("F", "M", "O") else ""
    age = _header_value(ct.metadata, "patient_age")
    if age:
        ds.PatientAge = age if age[-1:] in "DWMY" and len(age) == 4 else f"{int(float(age)):03d}Y"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"CT from {Path(str(ct.metadata.get('path') or 'volume')).name}"[:64]
    ds.PatientPosition = ""
    ds.Laterality = ""  # type 2C in General Series (dciodvfy asks for it on CT)
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = _header_value(ct.metadata, "manufacturer")
    ds.SoftwareVersions = f"OpportunisticBMD {__version__}"
    ds.KVP = _header_value(ct.metadata, "kvp")
    ds.AcquisitionNumber = 1
    ds.SliceThickness = f"{ct.spacing_mm[0]:.6g}"
    ds.PixelSpacing = [f"{ct.spacing_mm[1]:.6g}", f"{ct.spacing_mm[2]:.6g}"]  # rows (j), columns (i)
    direction = np.asarray(ct.direction, float).reshape(3, 3)
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(ct.shape[1]), int(ct.shape[2])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def write_ct_series(ct: Volume, folder: str | os.PathLike[str]) -> SourceSeries:
    """``ct`` as a CT Image Storage series in ``folder`` (one file per slice, new UIDs, HU as int16)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now()
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    base = _base_dataset(ct, study_uid, series_uid, frame_uid, now)
    direction = np.asarray(ct.direction, float).reshape(3, 3)
    origin = np.asarray(ct.origin_lps_mm, float)
    hu = np.clip(np.rint(ct.array), *HU_INT16_RANGE).astype(np.int16)
    datasets = []
    for k in range(ct.shape[0]):
        ds = Dataset()
        ds.update(base)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        position = origin + k * ct.spacing_mm[0] * direction[:, 2]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.SliceLocation = f"{position[2]:.6f}"
        ds.PixelData = np.ascontiguousarray(hu[k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f"CT{k + 1:04d}.dcm", enforce_file_format=True)
        del ds.PixelData  # the outputs reference headers only
        datasets.append(ds)
    return SourceSeries(datasets, [NEW_UIDS_WARNING], uids_generated=True)
