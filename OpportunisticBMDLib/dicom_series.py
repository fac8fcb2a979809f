"""Which series of a DICOM study is the CT to measure: one documented rule for folders, trees and PACS.

A study holds more than the reconstruction a measurement needs: scout/localizer images, dose reports,
secondary captures, lung- and bone-kernel reconstructions of the same acquisition, sagittal/coronal
reformats, thick "overview" series. ``choose_ct_series`` applies, in this order:

1. only CT image objects (CT Image Storage or Enhanced CT): dose reports (SR), secondary captures,
   presentation states and our own SEG/SR outputs are skipped;
2. no localizer, projection (MIP/MinIP/volume rendering) or other non-slice image types;
3. at least ``MIN_SLICES`` images;
4. axial: the slice normal within ``MAX_AXIAL_TILT_DEG`` of the patient's head-feet axis
   (reformats in other planes are skipped; the reader refuses the same tilt);
5. among the rest, a soft-tissue kernel before a sharp (bone/lung) one: sharp kernels raise noise and
   overshoot at edges, which biases trabecular HU;
6. then the thinnest slices, then the most images (coverage), then the lowest series number, then the
   series UID (so the choice never depends on file order).

The inputs are pydicom headers, from files (``scan_folder``) or from DICOMweb metadata (pydicom's
``Dataset.from_json``), so a folder, a tree and a PACS study are chosen alike.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

MIN_SLICES = 3  # the same minimum the image reader enforces (io.MIN_SLICES)
MAX_AXIAL_TILT_DEG = 30.0  # the reader's oblique limit (input_checks): beyond it a grid is refused
CT_IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
})
NOT_SLICE_IMAGE_TYPES = frozenset({"LOCALIZER", "MIP", "MINIP", "PROJECTION IMAGE", "VOLUME", "VR", "SCREEN SAVE"})
# Sharp-kernel names by vendor convention (design choice from the vendors' kernel naming: Siemens
# B/Br/I/Q/J with a number >= 50 and Bv/Hr sharp families, GE BONE/LUNG/EDGE/DETAIL, Philips D/E/L/Y..,
# Canon FC5x/FC8x lung/bone): a match moves the series behind any soft-tissue reconstruction.
SHARP_KERNEL_WORDS = ("BONE", "LUNG", "SHARP", "EDGE", "DETAIL", "HIGH RES", "ULTRA")
SHARP_KERNEL_PATTERN = re.compile(r"^(?:B|BR|I|Q|J|BL|HR)(\d{2})|^FC(5\d|8\d)|^[DEL]$|^Y[A-Z]?$")
SHARP_KERNEL_MIN_NUMBER = 50
NO_UID_PREFIX = "no-uid:"  # the grouping key of a series whose UID was blanked (an internal key, not a UID)


@dataclass(frozen=True)
class SeriesInfo:
    """What the rule needs to know of one series, and where its images are."""

    series_uid: str
    study_uid: str
    modality: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    description: str
    kernel: str
    slice_thickness_mm: float | None
    series_number: int | None
    row_col_directions: tuple[float, ...] | None
    locations: tuple[str, ...] = field(default_factory=tuple)  # file paths or instance URLs/UIDs

    @property
    def instance_uid(self) -> str | None:
        """The DICOM Series Instance UID; None for an anonymised series without one (``series_uid`` is then
        our grouping key, never shown as a UID)."""
        return None if self.series_uid.startswith(NO_UID_PREFIX) else self.series_uid

    @property
    def n_images(self) -> int:
        return len(self.locations)

    def summary(self) -> str:
        """One line a user reads: description, plane, slice thickness, kernel, image count."""
        thickness = f"{self.slice_thickness_mm:g} mm" if self.slice_thickness_mm else "thickness not recorded"
        kernel = f"kernel {self.kernel}" if self.kernel else "kernel not recorded"
        return f"'{self.description or 'no description'}' ({thickness}, {kernel}, {self.n_images} images)"


@dataclass(frozen=True)
class SeriesChoice:
    chosen: SeriesInfo | None
    skipped: tuple[tuple[SeriesInfo, str], ...]  # (series, why it was not chosen)
    reason: str  # why the chosen one, or why none

    def as_dict(self) -> dict:
        """For results.json ``input.series_choice``."""
        chosen = self.chosen
        return {
            "series_instance_uid": chosen.instance_uid if chosen else None,
            "description": chosen.description if chosen else None,
            "slice_thickness_mm": chosen.slice_thickness_mm if chosen else None,
            "kernel": chosen.kernel if chosen else None,
            "n_images": chosen.n_images if chosen else 0,
            "reason": self.reason,
            "skipped": [{"series_instance_uid": s.instance_uid, "description": s.description, "why": why}
                        for s, why in self.skipped],
        }


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _float_or_none(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _series_key(ds: Dataset) -> str:
    """The series UID; anonymised exports that blanked it are grouped by what they kept."""
    uid = _text(ds.get("SeriesInstanceUID"))
    if uid:
        return uid
    kept = ("FrameOfReferenceUID", "SeriesNumber", "SeriesDescription", "ImageOrientationPatient", "SliceThickness")
    return NO_UID_PREFIX + "|".join(_text(ds.get(k)) for k in kept)


def _sop_class(ds: Dataset) -> str:
    sop = _text(ds.get("SOPClassUID"))
    if not sop and hasattr(ds, "file_meta"):
        sop = _text(ds.file_meta.get("MediaStorageSOPClassUID"))
    return sop


def series_from_datasets(items: Iterable[tuple[Dataset, str]]) -> list[SeriesInfo]:
    """Group headers into series. ``items``: (header, where the image is: a path or a URL)."""
    groups: dict[str, list[tuple[Dataset, str]]] = {}
    for ds, where in items:
        groups.setdefault(_series_key(ds), []).append((ds, where))
    series = []
    for key, members in groups.items():
        first = members[0][0]
        orientation = first.get("ImageOrientationPatient")
        number = first.get("SeriesNumber")
        series.append(SeriesInfo(
            series_uid=key,
            study_uid=_text(first.get("StudyInstanceUID")),
            modality=_text(first.get("Modality")).upper(),
            sop_class_uid=_sop_class(first),
            image_type=tuple(_text(v).upper() for v in (first.get("ImageType") or ())),
            description=_text(first.get("SeriesDescription")),
            kernel=_text(first.get("ConvolutionKernel")),
            slice_thickness_mm=_float_or_none(first.get("SliceThickness")),
            series_number=int(number) if number not in (None, "") else None,
            row_col_directions=tuple(float(v) for v in orientation) if orientation and len(orientation) == 6 else None,
            locations=tuple(sorted(where for _, where in members)),
        ))
    return series


def is_sharp_kernel(kernel: str, description: str = "") -> bool:
    """True for bone/lung (sharp) reconstruction kernels, by the kernel name or the series description."""
    words = f"{kernel} {description}".upper()
    if any(word in words for word in SHARP_KERNEL_WORDS):
        return True
    for part in kernel.upper().split("\\"):
        match = SHARP_KERNEL_PATTERN.match(part.strip())
        if match:
            number = next((g for g in match.groups() if g), None)
            if number is None or int(number) >= SHARP_KERNEL_MIN_NUMBER:
                return True
    return False


def axial_tilt_deg(row_col_directions: tuple[float, ...] | None) -> float | None:
    """Angle between the slice normal and the head-feet axis (0 = axial, 90 = sagittal/coronal)."""
    if row_col_directions is None:
        return None
    r, c = row_col_directions[:3], row_col_directions[3:]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in normal))
    if norm == 0:
        return None
    return math.degrees(math.acos(min(1.0, abs(normal[2]) / norm)))


def why_not_measurable(series: SeriesInfo) -> str | None:
    """Why a series cannot be the CT to measure (rules 1-4), or None when it can."""
    if series.modality != "CT":
        return f"modality {series.modality or 'not recorded'}, not CT"
    if series.sop_class_uid and series.sop_class_uid not in CT_IMAGE_SOP_CLASSES:
        return "not a CT image object (secondary capture, report or derived object)"
    not_slices = NOT_SLICE_IMAGE_TYPES.intersection(series.image_type)
    if not_slices:
        return f"image type {'/'.join(sorted(not_slices))}, not cross-sectional slices"
    if series.n_images < MIN_SLICES:
        return f"only {series.n_images} image(s)"
    tilt = axial_tilt_deg(series.row_col_directions)
    if tilt is not None and tilt > MAX_AXIAL_TILT_DEG:
        return f"not axial (slice plane {tilt:.0f} degrees from axial: a reformat)"
    return None


def choose_ct_series(series: Iterable[SeriesInfo]) -> SeriesChoice:
    """The rule of this module's docstring."""
    candidates, skipped = [], []
    for item in series:
        why = why_not_measurable(item)
        if why:
            skipped.append((item, why))
        else:
            candidates.append(item)
    if not candidates:
        return SeriesChoice(None, tuple(skipped), "no axial CT image series with at least "
                            f"{MIN_SLICES} slices in this study")

    def rank(item: SeriesInfo) -> tuple:
        return (is_sharp_kernel(item.kernel, item.description), item.slice_thickness_mm or math.inf,
                -item.n_images, item.series_number if item.series_number is not None else math.inf, item.series_uid)

    candidates.sort(key=rank)
    chosen = candidates[0]
    for other in candidates[1:]:
        if is_sharp_kernel(other.kernel, other.description) and not is_sharp_kernel(chosen.kernel, chosen.description):
            why = "sharp (bone/lung) kernel; a soft-tissue reconstruction exists"
        elif (other.slice_thickness_mm or math.inf) > (chosen.slice_thickness_mm or math.inf):
            why = "thicker slices than the chosen series"
        else:
            why = "fewer images or a later series than the chosen one"
        skipped.append((other, why))
    kind = "sharp-kernel (no soft-tissue series available)" if is_sharp_kernel(chosen.kernel, chosen.description) \
        else "soft-tissue"
    reason = f"axial {kind} series {chosen.summary()}, the thinnest of {len(candidates)} measurable series"
    return SeriesChoice(chosen, tuple(skipped), reason)


def only_series(files: Sequence[str], header: Dataset) -> SeriesChoice:
    """The choice record of a folder holding one series (``files``, ``header`` one of their headers): no rule
    to apply, but what was read is recorded as for a choice among many (results.json ``input.series_choice``)."""
    (info,) = series_from_datasets((header, name) for name in files)
    return SeriesChoice(info, (), f"the only image series in the folder: {info.summary()}")


HEADER_TAGS = ("SeriesInstanceUID", "StudyInstanceUID", "Modality", "SOPClassUID", "ImageType", "SeriesDescription",
               "ConvolutionKernel", "SliceThickness", "SeriesNumber", "ImageOrientationPatient", "FrameOfReferenceUID")


def read_header(path: str | os.PathLike[str]) -> Dataset | None:
    """The header of a DICOM file (no pixels), or None when the file is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError):
        return None


def scan_folder(folder: str | os.PathLike[str], recursive: bool = False) -> list[SeriesInfo]:
    """The DICOM series in ``folder`` (its files only, or the whole tree when ``recursive``)."""
    folder = Path(folder)
    paths = folder.rglob("*") if recursive else folder.iterdir()
    items = []
    for path in sorted(paths):
        if path.is_file() and not path.name.startswith("."):
            header = read_header(path)
            if header is not None:
                items.append((header, str(path)))
    return series_from_datasets(items)


def studies(series: Iterable[SeriesInfo]) -> dict[str, list[SeriesInfo]]:
    """Series grouped by study UID (series of anonymised exports without one share the key '')."""
    grouped: dict[str, list[SeriesInfo]] = {}
    for item in series:
        grouped.setdefault(item.study_uid, []).append(item)
    return grouped


__all__ = ["SeriesChoice", "SeriesInfo", "axial_tilt_deg", "choose_ct_series", "is_sharp_kernel", "read_header",
           "scan_folder", "series_from_datasets", "studies", "why_not_measurable"]
