"""The DICOM and PACS flags of ``obmd analyze`` and what they do around the analysis: fetch a DICOMweb
study's CT series, say what OUT/dicom/ holds (written by :mod:`..report_folder`), store it back. Kept apart
from commands/analyze.py, which calls :func:`add_dicom_arguments` and the steps below."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def add_dicom_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DICOM and PACS")
    group.add_argument("--pacs", metavar="URL",
                       help="DICOMweb root of a PACS (e.g. http://HOST:8042/dicom-web); with --study, analyse that "
                       "study (same as CT = dicomweb://HOST:PORT/PATH/studies/<StudyUID>)")
    group.add_argument("--study", metavar="UID", help="Study Instance UID to fetch from --pacs")
    group.add_argument("--store", action="store_true",
                       help="send the DICOM SEG, SR and PDF back to the PACS the study came from (STOW-RS)")
    written = group.add_mutually_exclusive_group()  # opposite wishes: argparse refuses both at once (exit 2)
    written.add_argument("--dicom-out", action="store_true",
                         help="write OUT/dicom/ for a NIfTI/NRRD CT too (the CT as a new DICOM series, new UIDs); "
                         "DICOM input writes it unless --no-dicom-out or --json-only")
    written.add_argument("--no-dicom-out", action="store_true", help="do not write OUT/dicom/ for DICOM input")


def study_address(args: argparse.Namespace):
    """The DICOMweb study to analyse, or None for a local CT."""
    from . import dicomweb

    if args.pacs or args.study:
        if not (args.pacs and args.study):
            raise InputError("--pacs and --study go together: --pacs http://HOST:PORT/dicom-web --study <StudyUID>")
        if args.ct:
            raise InputError(f"give either a CT ({args.ct}) or --pacs/--study, not both")
        return dicomweb.address(args.pacs, args.study)
    if not args.ct:
        raise InputError("no CT given: a NIfTI/NRRD file, a DICOM folder, dicomweb://HOST:PORT/PATH/studies/<UID> "
                         "or --pacs URL --study UID")
    return dicomweb.parse_address(args.ct) if dicomweb.is_dicomweb(args.ct) else None


@contextlib.contextmanager
def local_ct(args: argparse.Namespace) -> Iterator[tuple[str, dict | None]]:
    """The CT path to read (a DICOMweb study's CT series retrieved into a temporary folder, deleted after) and
    the series choice (None for a local CT: the reader records its own)."""
    if args.store and (args.json_only or args.no_dicom_out):  # refused before any fetch or analysis
        flag = "--json-only" if args.json_only else "--no-dicom-out"
        raise InputError(f"--store sends OUT/dicom/ (SEG, SR, PDF) back to the PACS; {flag} writes none: drop one "
                         "of the two")
    where = study_address(args)
    if args.store and where is None:
        raise InputError("--store sends the results back to the PACS the study came from: analyse a "
                         "dicomweb://... study (or --pacs/--study)")
    if where is None:
        yield args.ct, None
        return
    from . import dicomweb

    with tempfile.TemporaryDirectory(prefix="obmd-dicomweb-") as folder:
        print(f"fetching {where}", file=sys.stderr)
        choice = dicomweb.fetch_ct_series(where, folder)
        args.dicomweb_address = where
        yield folder, choice.as_dict()


def report_folder_options(args: argparse.Namespace):
    """What ``--json-only``, ``--dicom-out`` and ``--no-dicom-out`` ask of the report folder
    (:class:`..report_folder.ReportFolderOptions`): DICOM input writes OUT/dicom unless --no-dicom-out or
    --json-only; other input only with --dicom-out."""
    from ..report_folder import ReportFolderOptions

    dicom = "never" if args.no_dicom_out else "always" if args.dicom_out else "auto"
    return ReportFolderOptions(dicom=dicom, json_only=bool(args.json_only))


def record_source(args: argparse.Namespace, result, series_choice: dict | None) -> None:
    """Before anything is written: results.json ``input.ct`` is the PACS study's address (not the temporary
    folder it was fetched into) and ``input.series_choice`` the choice made on the server; print the choice."""
    where = getattr(args, "dicomweb_address", None)
    inputs = result.results.setdefault("input", {})
    if series_choice is not None:
        inputs["series_choice"] = series_choice
    if where is not None:
        inputs["ct"] = str(where)
    choice = inputs.get("series_choice")
    if choice:
        print(f"series: {choice.get('reason')}")


def print_written(args: argparse.Namespace, written) -> None:
    """After the report folder (:class:`..report_folder.WrittenReport`) is written: its notes as warnings
    and the DICOM objects it holds."""
    for note in written.notes:
        print(f"obmd: warning: {note}", file=sys.stderr)
    if written.dicom_files:
        print(f"DICOM: {', '.join(written.dicom_files)} in {Path(args.out) / 'dicom'}")


def store(args: argparse.Namespace, out_dir: Path) -> None:
    """``--store``: STOW-RS the SEG, SR and PDF of ``out_dir/dicom`` to the study's server."""
    where = getattr(args, "dicomweb_address", None)
    if not args.store or where is None:
        return
    from . import dicomweb
    from .writer import DICOM_DIR, PDF_NAME, SEG_NAME, SR_NAME

    paths = [out_dir / DICOM_DIR / name for name in (SEG_NAME, SR_NAME, PDF_NAME)]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise InputError(f"--store: nothing in {out_dir / DICOM_DIR} to send")
    stored = dicomweb.store(where.url, paths)
    print(f"stored {len(stored)} objects ({', '.join(p.name for p in paths)}) in study {where.study_uid} "
          f"on {where.url}")
