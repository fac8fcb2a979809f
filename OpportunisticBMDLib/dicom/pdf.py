"""The PDF report (OUT/report.pdf) as a DICOM Encapsulated PDF in the source CT's study (pydicom: highdicom
has no Encapsulated Document class). Patient and study attributes are copied from the source slice, never
invented."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

from .. import __version__

# Patient and General Study module attributes copied from the source (type 2 where absent: empty).
COPIED_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                   "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
                   "IssuerOfPatientID", "PatientAge")
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber")
DOCUMENT_TITLE = "OpportunisticBMD bone density report"


def encapsulate_pdf(pdf_path: str | os.PathLike[str], source: Dataset, *, series_uid: str, sop_uid: str,
                    series_number: int) -> Dataset:
    """An Encapsulated PDF Storage dataset holding ``pdf_path``, in ``source``'s study."""
    data = Path(pdf_path).read_bytes()
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in COPIED_KEYWORDS:
        if keyword in source and source.data_element(keyword).value not in (None, ""):
            setattr(ds, keyword, source.data_element(keyword).value)
        elif keyword in TYPE2_KEYWORDS:
            setattr(ds, keyword, "")
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "OBMD report (PDF)"
    ds.Manufacturer = "OpportunisticBMD"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"  # workstation: the document was made by software
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # the PDF prints the patient's identification
    ds.DocumentTitle = DOCUMENT_TITLE
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = data + (b"\x00" if len(data) % 2 else b"")  # OB values have even length
    ds.EncapsulatedDocumentLength = len(data)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
