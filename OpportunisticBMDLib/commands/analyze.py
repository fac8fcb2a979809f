"""``obmd analyze CT [--seg LABELS] --out DIR``: vertebral vBMD (and what later issues add) from a CT.

Writes ``DIR/results.json`` (docs/results-contract.md), ``DIR/results.csv`` (one row) and the ROI masks
``DIR/masks/<roi>.nii.gz`` on the CT's own grid; prints a per-level table, the summary, the calibration
and the QC flags.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import calibration, settings
from ..errors import InputError, ModelError
from ..hip.tscores import load_age_reference
from ..settings import AnalysisOptions
from ..text_report import print_report

# Exit status when the analysis ran but nothing could be backed (results.json status "not_measurable");
# 0 for complete and partial, 2 for input errors (cli.py).
EXIT_NOT_MEASURABLE = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze", help="measure vertebral BMD from a CT (and its segmentation)", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("ct", nargs="?", help="CT in HU: NIfTI/NRRD/MHA file, DICOM series folder or a PACS study "
                        "dicomweb://HOST:PORT/PATH/studies/<StudyUID>")
    parser.add_argument("--seg", metavar="LABELS",
                        help="label map on the CT grid (our schema or TotalSegmentator 'total'); "
                        "without it the segmentation models run")
    parser.add_argument("--body-seg", metavar="VERTEBRAE_BODY",
                        help="optional TotalSegmentator 'vertebrae_body' mask (1 = bodies) to isolate the bodies")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: new, empty or an earlier obmd result (replaced whole); "
                        "not the inputs' folder")
    settings.add_arguments(parser, list(calibration.CALIBRATIONS), calibration.cli_help())
    parser.add_argument("--json-only", action="store_true", help="write results.json only (no CSV, no masks)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from ..dicom.cli import add_dicom_arguments

    add_dicom_arguments(parser)
    parser.set_defaults(func=run)


def check_z_reference(path: str | None) -> None:
    """Fail before the analysis on a missing or malformed --z-reference table."""
    if not path:
        return
    try:
        load_age_reference(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"--z-reference: {exc}") from exc


def check_backend(args: argparse.Namespace) -> None:
    """Refuse an unusable ``--backend`` before reading the CT (a clear line, no traceback)."""
    backend = args.backend
    if backend == "obmd":
        return
    if args.seg:
        raise InputError(f"--backend {backend} chooses the segmentation that runs without --seg; "
                         "with --seg LABELS no segmentation runs: drop one of the two")
    from ..models import totalseg_backend

    if backend == "totalsegmentator" and not totalseg_backend.available():
        raise ModelError(totalseg_backend.MISSING_MESSAGE)


def written_text(written: dict) -> str:
    """', results.csv, report.pdf, 4 masks and dicom/ (report_pdf.dcm, seg.dcm, sr.dcm, ct/)': what joined
    results.json in the output folder (report_folder.WrittenReport.files' names)."""
    parts = [name for name in ("results.csv", "report.pdf") if name in written]
    n_masks = sum(1 for k in written if k.startswith("masks/"))
    if n_masks:
        parts.append(f"{n_masks} mask{'s' if n_masks != 1 else ''}")
    dicom = sorted(k.split("/", 1)[1] for k in written if k.startswith("dicom/") and k.count("/") == 1)
    dicom += sorted({k.split("/")[1] + "/" for k in written if k.startswith("dicom/") and k.count("/") > 1})
    if any(k.startswith("dicom/") for k in written):
        parts.append("dicom/" + (f" ({', '.join(dicom)})" if dicom else ""))
    if not parts:
        return ""
    return ", " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0])


def run(args: argparse.Namespace) -> int:
    from ..dicom.cli import local_ct

    with local_ct(args) as (ct_path, series_choice):  # a dicomweb:// study: its CT series fetched to a temp folder
        return _run(args, ct_path, series_choice)


def _run(args: argparse.Namespace, ct_path: str, series_choice: dict | None) -> int:
    from ..dicom import cli as dicom_cli
    from ..io import read_ct, read_labels
    from ..output_folder import staged_output
    from ..pipeline import analyze
    from ..progress import TerminalProgress, no_progress
    from ..report_folder import write_report_folder
    from ..validity import STATUS_NOT_MEASURABLE

    start = time.perf_counter()
    check_backend(args)
    options = AnalysisOptions.from_args(args)  # validated (an impossible --age...) before any file is read
    check_z_reference(options.z_reference)
    out = Path(args.out)
    # --out is checked and locked before the CT is read; the results go to a fresh folder beside it that
    # replaces it whole at the end (output_folder.py): never next to an input, never two cases mixed
    inputs = [ct_path, args.seg, args.body_seg, args.calibration_file, args.z_reference]
    with staged_output(out, inputs) as staging:
        progress = no_progress if args.quiet else TerminalProgress()
        progress(0.0, f"Reading {args.ct or ct_path}")
        ct = read_ct(ct_path)
        labels = read_labels(args.seg, like=ct) if args.seg else None
        body = read_labels(args.body_seg, like=ct) if args.body_seg else None
        result = analyze(ct, labels, options, progress=progress, body_mask=body)
        dicom_cli.record_source(args, result, series_choice)  # input.ct of a PACS study, input.series_choice
        # results.json, results.csv, masks, report.pdf and OUT/dicom: the folder Slicer and the web app save too
        report = write_report_folder(result, ct, staging, dicom_cli.report_folder_options(args))
        dicom_cli.print_written(args, report)
        written = report.files
    print_report(result.results)
    print(f"wrote {out / 'results.json'}{written_text(written)} in {time.perf_counter() - start:.1f} s")
    dicom_cli.store(args, out)  # --store: SEG, SR, PDF back to the PACS (after the folder is in place)
    return EXIT_NOT_MEASURABLE if result.results.get("status") == STATUS_NOT_MEASURABLE else 0
