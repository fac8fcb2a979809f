"""What ``obmd web`` opens at start: a CT file (optionally with its label map) or a digital patient."""

from __future__ import annotations

from pathlib import Path

from ..volume import Volume


def case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)] or "CT"
    return name or "CT"


def header_of_file(path: str | Path) -> dict[str, str]:
    """The CT header fields (:data:`..io.HEADER_KEYS`) of an uploaded image file: a DICOM file's tags (the
    slice trame-slicer loaded the series from), else the JSON sidecar beside it (``ct.json`` uploaded with
    ``ct.nii.gz``) -- what ``obmd analyze`` reads from a DICOM folder or a sidecar. Empty when there is none."""
    import SimpleITK as sitk

    from ..io import DICOM_TAGS, HEADER_KEYS, read_sidecar

    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    header = {key: reader.GetMetaData(tag).strip() for key, tag in DICOM_TAGS.items()
              if key in HEADER_KEYS and reader.HasMetaDataKey(tag) and reader.GetMetaData(tag).strip()}
    if header:
        return header
    return {key: value for key, value in read_sidecar(path).items() if key in HEADER_KEYS}


def load_ct_case(ct_path: str | Path, labels_path: str | Path | None = None) -> tuple[Volume, Volume | None, str]:
    """A CT (any format :func:`..io.read_ct` reads) and, if given, its label map mapped to our schema."""
    from ..io import read_ct, read_labels
    from ..labels import normalise_label_ids

    ct_path = Path(ct_path)
    ct = read_ct(ct_path)
    labels = None
    if labels_path is not None:
        labels = read_labels(Path(labels_path), like=ct)
        labels.array, _mapped = normalise_label_ids(labels.array)
    name = case_name(ct_path)
    if name == "ct":  # e.g. TotalSegmentator's folder layout: name the case after its folder
        name = ct_path.resolve().parent.name or name
    return ct, labels, name


def load_phantom_case(
    seed: int, region: str = "torso", spacing_mm: float | None = None
) -> tuple[Volume, Volume | None, str]:
    """A generated digital patient (CT + its true label map of our schema), reproducible from ``seed``
    (:func:`..phantom.digital_patient`, with the header a scan of it would carry: kVp, age, sex).

    ``spacing_mm``: isotropic voxel size (default: the generator's). The true labels are given to the
    analysis (no models needed), so what is shown is the measurement, not the segmentation."""
    from ..phantom import digital_patient

    phantom = digital_patient(int(seed), region, spacing_mm)
    return phantom.ct, phantom.labels, f"digital-patient-{int(seed):03d}"
