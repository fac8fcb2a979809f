"""The report folder, written the same by every front end (``obmd analyze --out``, Slicer's and the browser
app's Save report): ``results.json``, ``results.csv``, ``masks/``, ``report.pdf`` (:func:`.pipeline.write_outputs`)
and, when the CT came from DICOM or when asked, ``dicom/`` (SEG, SR, encapsulated PDF: :mod:`.dicom.writer`).

results.json's ``dicom`` block says what ``dicom/`` holds; it is absent when nothing was written there (a
result saved twice never keeps the block of an earlier save).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .pipeline import AnalysisResult, write_outputs
from .report.pdf import ReportOptions
from .results import write_json
from .volume import Volume

DICOM_DIR = "dicom"  # dicom.writer.DICOM_DIR (not imported here: pydicom and highdicom load only when writing)
# auto: dicom/ when the CT came from DICOM (a folder we read, or the series' files given); always: also for
# a NIfTI/NRRD CT (the CT written as a new DICOM series, new UIDs); never: no dicom/
DicomChoice = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class ReportFolderOptions:
    dicom: DicomChoice = "auto"
    json_only: bool = False  # results.json only (and dicom/ when dicom="always"): no CSV, masks nor PDF
    page: ReportOptions | None = None  # the PDF's page size (None: A4)


@dataclass
class WrittenReport:
    """What :func:`write_report_folder` wrote: relative name -> path, and what the user should be told."""

    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # UIDs made up, dicom/ not written and why

    @property
    def dicom_files(self) -> list[str]:
        """Names of the DICOM objects written (``seg.dcm``, ``sr.dcm``, ``report_pdf.dcm``; not a CT series)."""
        return [name.split("/", 1)[1] for name in self.files
                if name.startswith(DICOM_DIR + "/") and name.count("/") == 1]


def _source_folder(ct: Volume) -> Path | None:
    """The DICOM folder ``ct`` was read from (its metadata: io.read_ct, kept on a Slicer node), else None."""
    if ct.metadata.get("format") == "dicom" and ct.metadata.get("path"):
        return Path(ct.metadata["path"])
    return None


def dicom_wanted(ct: Volume, options: ReportFolderOptions, source_files: Sequence[str | os.PathLike[str]] = (),
                 notes: list[str] | None = None) -> bool:
    """Whether ``dicom/`` is written; in ``auto``, a DICOM folder that is gone (a scene reopened on another
    machine) writes the rest of the folder and says why ``dicom/`` is not there (in ``notes``)."""
    if options.dicom == "never":
        return False
    if options.dicom == "always":
        return True
    if options.json_only:
        return False
    if source_files:
        return True
    folder = _source_folder(ct)
    if folder is None:
        return False
    if not folder.is_dir():
        if notes is not None:
            notes.append(f"{folder}: the DICOM folder the CT was read from is gone: no DICOM outputs written")
        return False
    return True


def write_report_folder(result: AnalysisResult, ct: Volume, out_dir: str | os.PathLike[str],
                        options: ReportFolderOptions | None = None,
                        source_files: Sequence[str | os.PathLike[str]] = ()) -> WrittenReport:
    """Write the report of ``result`` (measured on ``ct``) into the folder ``out_dir`` (already staged by the
    caller: :func:`save_report_folder`, or ``obmd analyze``'s own staging). ``source_files``: the DICOM
    instances ``ct`` was loaded from when its metadata does not name a DICOM folder (Slicer's DICOM module)."""
    options = options or ReportFolderOptions()
    out_dir = Path(out_dir)
    written = WrittenReport()
    result.results.pop("dicom", None)  # an earlier save's block: written again below only with dicom/
    if options.json_only:
        written.files["results.json"] = write_json(result.results, out_dir / "results.json")
    else:
        written.files.update(write_outputs(result, ct, out_dir, options.page))
    if dicom_wanted(ct, options, source_files, written.notes):
        from .dicom.writer import write_dicom_outputs  # after report.pdf: dicom/report_pdf.dcm wraps it

        outputs = write_dicom_outputs(result, ct, out_dir, [Path(p) for p in source_files])
        written.files.update(outputs.paths)
        written.notes.extend(outputs.info.get("notes", []))
        written.files["results.json"] = write_json(result.results, out_dir / "results.json")  # + its dicom block
    return written


def save_report_folder(result: AnalysisResult, ct: Volume, out_dir: str | os.PathLike[str],
                       options: ReportFolderOptions | None = None,
                       source_files: Sequence[str | os.PathLike[str]] = ()) -> WrittenReport:
    """:func:`write_report_folder` into a new or earlier report folder replaced whole (:mod:`.output_folder`:
    a folder holding anything else, or lying inside the DICOM source, is refused); paths are the final ones."""
    from .output_folder import staged_output

    out_dir = Path(out_dir)
    inputs = [_source_folder(ct), *source_files]
    with staged_output(out_dir, inputs) as staging:
        written = write_report_folder(result, ct, staging, options, source_files)
    written.files = {key: out_dir / path.relative_to(staging) for key, path in written.files.items()}
    return written


__all__ = ["DicomChoice", "ReportFolderOptions", "WrittenReport", "dicom_wanted", "save_report_folder",
           "write_report_folder"]
