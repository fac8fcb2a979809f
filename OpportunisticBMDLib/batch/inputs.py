"""The cases of a batch: from image files and folders, DICOM trees and CSV manifests.

Rules (docs/batch.md):

- a CSV file is a manifest: one case per row, columns ``ct`` (required: an image file or a DICOM folder),
  ``seg``, ``age``, ``sex`` and ``id`` (optional); relative paths are relative to the CSV's folder;
- an image file (NIfTI, NRRD, MHA) is one case;
- a folder is walked: a folder that holds ``ct.<ext>`` is one case (that CT; the labels, masks and
  density maps that ``obmd phantom`` or a converter write beside it are not cases), other image files are
  one case each; folders an OBMD run wrote (a ``.obmd-output`` marker or ``results.json``) are skipped;
  every other file is read as DICOM when it is DICOM: its series are grouped by study UID, and per
  study the CT series is chosen by :mod:`OpportunisticBMDLib.dicom_series` (the choice is recorded;
  a study without a measurable series is a failed case with the rule's reason).

Case ids come from the path relative to the input (``/`` becomes ``__``), made unique with ``-2``, ``-3``.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import dicom_series
from ..errors import InputError
from ..header import AGE_RANGE_Y, age_years, plausible_age, sex_code
from ..io import CT_SUFFIXES
from ..output_folder import MARKER_NAME

CT_STEM = "ct"  # ct.nii.gz & co: the one CT of its folder
# never read as DICOM: what sits beside images and reports (saves a header read per file in big trees)
NOT_DICOM_SUFFIXES = (".json", ".csv", ".txt", ".md", ".png", ".pdf", ".parquet", ".html", ".py", ".zip", ".gz")
MANIFEST_COLUMNS = ("ct", "seg", "age", "sex", "id")


@dataclass(frozen=True)
class CaseInput:
    """One case: what to read and what the analysis needs beyond the image."""

    case_id: str
    ct: str  # an image file or a DICOM folder (for a series chosen in a tree: the series' common folder)
    dicom_files: tuple[str, ...] = ()  # the chosen series' files when the CT is a series found in a tree
    seg: str | None = None
    age: float | None = None
    sex: str | None = None
    series_choice: dict | None = field(default=None, compare=False)  # dicom_series.SeriesChoice.as_dict()
    problem: str | None = None  # why it cannot be analysed, known before reading (no CT series in a study)

    def series_description(self) -> str | None:
        """The chosen series in one line (cohort column), None for image files."""
        c = self.series_choice
        if not c or not c.get("n_images"):
            return None
        uid = c.get("series_instance_uid")  # null for an anonymised series without a UID: the description says it
        return (f"{c.get('description') or 'no description'} | {c.get('slice_thickness_mm') or '?'} mm | "
                f"{c.get('kernel') or 'no kernel'} | {c.get('n_images')} images" + (f" | {uid}" if uid else ""))


def _is_image(path: Path) -> bool:
    return path.name.lower().endswith(CT_SUFFIXES)


def _image_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(CT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _safe_id(text: str) -> str:
    text = text.replace(os.sep, "__").replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "case"


def _is_obmd_output(folder: Path) -> bool:
    return (folder / MARKER_NAME).is_file() or (folder / "results.json").is_file()


# Files whose DICOM headers one task reads (design choice: ~0.4 ms a header, so ~1 s of work per task,
# enough to outweigh Dask's per-task cost of a few ms, small enough to spread a large tree over the workers).
HEADERS_PER_TASK = 2000


def serial_map(function: Callable, items: list) -> list:
    """A :data:`Mapper` in this process."""
    return [function(item) for item in items]


# How header reading is spread: ``mapper(function, items) -> [function(item) for item in items]``, in this
# process (serial_map) or over the batch's Dask workers (engine.Engine.map): an archive of 100,000 studies
# holds tens of millions of files, hours of header reading for one process.
Mapper = Callable[[Callable, list], list]


def scan_series(paths: list[str]) -> list[dicom_series.SeriesInfo]:
    """The DICOM series among ``paths`` (files that are not DICOM are left out)."""
    items = []
    for path in paths:
        header = dicom_series.read_header(path)
        if header is not None:
            items.append((header, str(path)))
    return dicom_series.series_from_datasets(items)


def merge_series(parts: Iterable[list[dicom_series.SeriesInfo]]) -> list[dicom_series.SeriesInfo]:
    """Series read in several chunks joined by their UID (their images' locations together)."""
    merged: dict[str, dicom_series.SeriesInfo] = {}
    for part in parts:
        for series in part:
            known = merged.get(series.series_uid)
            merged[series.series_uid] = series if known is None else replace(
                known, locations=tuple(sorted(known.locations + series.locations)))
    return list(merged.values())


def _dicom_cases(root: Path, files: list[Path], mapper: Mapper = serial_map) -> list[CaseInput]:
    """One case per study among ``files`` (DICOM or not: non-DICOM files are left out by their header)."""
    chunks = [[str(f) for f in files[i:i + HEADERS_PER_TASK]] for i in range(0, len(files), HEADERS_PER_TASK)]
    found = merge_series(mapper(scan_series, chunks)) if chunks else []
    cases = []
    for study_uid, series in dicom_series.studies(found).items():
        choice = dicom_series.choose_ct_series(series)
        all_files = [loc for s in series for loc in s.locations]
        chosen_files = choice.chosen.locations if choice.chosen else tuple(all_files)
        folder = Path(os.path.commonpath([str(Path(f).parent) for f in chosen_files]))
        rel = folder.relative_to(root).as_posix() if folder != root else root.name
        if len(cases) and any(c.ct == str(folder) for c in cases):  # two studies in one folder
            rel = f"{rel}-{study_uid[-8:]}"
        cases.append(CaseInput(
            case_id=_safe_id(rel), ct=str(folder), dicom_files=tuple(choice.chosen.locations) if choice.chosen else (),
            series_choice=choice.as_dict(),
            problem=None if choice.chosen else f"study {study_uid or '(no study UID)'}: {choice.reason}"))
    return cases


def _folder_cases(root: Path, mapper: Mapper) -> list[CaseInput]:
    cases, maybe_dicom = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _is_obmd_output(here / d))
        if _is_obmd_output(here):
            continue
        names = sorted(n for n in filenames if not n.startswith("."))
        images = [here / n for n in names if _is_image(here / n)]
        ct_files = [p for p in images if _image_stem(p).lower() == CT_STEM]
        if ct_files:
            rel = here.relative_to(root).as_posix() if here != root else root.name
            cases.append(CaseInput(case_id=_safe_id(rel), ct=str(ct_files[0])))
        else:
            for image in images:
                rel = (here / _image_stem(image)).relative_to(root).as_posix()
                cases.append(CaseInput(case_id=_safe_id(rel), ct=str(image)))
        maybe_dicom += [here / n for n in names
                        if not _is_image(here / n) and not n.lower().endswith(NOT_DICOM_SUFFIXES)]
    return cases + _dicom_cases(root, maybe_dicom, mapper)


def _number(value: str, what: str, where: str) -> float | None:
    if value.strip() == "":
        return None
    age = age_years(value)
    if age is None:
        raise InputError(f"{where}: {what} {value!r} is not a number of years (e.g. 63 or 063Y)")
    if not plausible_age(age):  # as --age (settings.AnalysisOptions): a usage error, exit 2
        low, high = AGE_RANGE_Y
        raise InputError(f"{where}: {what} {value!r}: patient age in years, more than {low:g} and at most {high:g}")
    return age


def _manifest_cases(path: Path, mapper: Mapper) -> list[CaseInput]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV manifest ({exc})") from exc
    if "ct" not in columns:
        raise InputError(f"{path}: a manifest needs a 'ct' column (optional: seg, age, sex, id); it has "
                         f"{', '.join(columns) or 'no header'}")
    cases = []
    for number, raw in enumerate(rows, start=2):  # row 1 is the header
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{path} line {number}"
        if not row.get("ct"):
            raise InputError(f"{where}: empty 'ct'")
        ct = (path.parent / row["ct"]).resolve() if not Path(row["ct"]).is_absolute() else Path(row["ct"])
        seg = row.get("seg") or None
        seg_path = None if seg is None else str((path.parent / seg).resolve() if not Path(seg).is_absolute() else seg)
        sex = row.get("sex", "")
        if sex and sex_code(sex) is None:
            raise InputError(f"{where}: sex {sex!r}: F or M (or empty)")
        case_id = row.get("id") or (_image_stem(ct) if _is_image(ct) else ct.name)
        base = CaseInput(case_id=_safe_id(case_id), ct=str(ct), seg=seg_path,
                         age=_number(row.get("age", ""), "age", where), sex=sex_code(sex))
        if ct.is_dir() and not any(_is_image(p) for p in ct.iterdir()):  # a DICOM folder or tree
            files = sorted(p for p in ct.rglob("*") if p.is_file() and not p.name.startswith("."))
            studies = _dicom_cases(ct, files, mapper)
            if len(studies) > 1:
                raise InputError(f"{where}: {ct} holds {len(studies)} DICOM studies; give one row per study folder")
            if studies:
                found = studies[0]
                base = replace(base, ct=found.ct, dicom_files=found.dicom_files, series_choice=found.series_choice,
                               problem=found.problem)
        cases.append(base)
    return cases


def find_cases(inputs: Iterable[str | os.PathLike[str]], mapper: Mapper = serial_map) -> list[CaseInput]:
    """The cases of every input, in order, with unique ids. :class:`InputError` for a missing input or a
    malformed manifest (a case that cannot be read fails later, on its own). ``mapper`` reads the DICOM
    headers (:data:`Mapper`)."""
    cases: list[CaseInput] = []
    for given in inputs:
        path = Path(given).expanduser()
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_file() and path.suffix.lower() == ".csv":
            cases += _manifest_cases(path, mapper)
        elif path.is_file() and _is_image(path):
            cases.append(CaseInput(case_id=_safe_id(_image_stem(path)), ct=str(path.resolve())))
        elif path.is_dir():
            cases += _folder_cases(path.resolve(), mapper)
        else:
            raise InputError(f"{path}: not an image (NIfTI, NRRD, MHA), a folder or a CSV manifest")
    return unique_ids(cases)


def unique_ids(cases: list[CaseInput]) -> list[CaseInput]:
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        n = seen.get(case.case_id, 0) + 1
        seen[case.case_id] = n
        if n > 1:
            case = replace(case, case_id=f"{case.case_id}-{n}")
        out.append(case)
    return out
