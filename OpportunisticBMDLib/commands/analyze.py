"""``obmd analyze CT [--seg LABELS] --out DIR``: vertebral vBMD (and what later issues add) from a CT.

Writes ``DIR/results.json`` (docs/results-contract.md), ``DIR/results.csv`` (one row) and the ROI masks
``DIR/masks/<roi>.nii.gz`` on the CT's own grid; prints a per-level table, the summary, the calibration
and the QC flags.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BACKENDS = ("obmd", "totalsegmentator")
# Exit status when the analysis ran but nothing could be backed (results.json status "not_measurable");
# 0 for complete and partial, 2 for input errors (cli.py).
EXIT_NOT_MEASURABLE = 3
CALIBRATION_HELP = ("auto (default: the in-scan calibration pad when one is found in the CT, else muscle-fat), "
                    "inscan (the pad's rods; --pad-densities), muscle-fat (psoas + anterior subcutaneous fat), "
                    "internal-multi (several tissues, Michalski 2020), phantom (--slope/--intercept or "
                    "--calibration-file), hu (HU only)")


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
    parser.add_argument("--calibration", default="auto", metavar="METHOD", help=CALIBRATION_HELP)
    parser.add_argument("--pad-densities", type=float, nargs="+", metavar="MG_CM3",
                        help="inscan/auto: the calibration pad rods' HA densities (mg/cm3; the base is 0), "
                        "default 50 100 150 200 (the digital patient's pad)")
    parser.add_argument("--slope", type=float, help="phantom calibration slope (mg/cm3 per HU)")
    parser.add_argument("--intercept", type=float, help="phantom calibration intercept (mg/cm3)")
    parser.add_argument("--calibration-file", metavar="JSON", help="calib.json from 'obmd calibrate-phantom'")
    parser.add_argument("--muscle-density", type=float, metavar="MG_CM3",
                        help="equivalent density of muscle for muscle-fat (default: computed at the scan kVp)")
    parser.add_argument("--fat-density", type=float, metavar="MG_CM3", help="equivalent density of fat for muscle-fat")
    parser.add_argument("--psoas-fat", type=float, metavar="FRACTION",
                        help="psoas fat (adipose) fraction 0-0.5 for muscle-fat, e.g. from MRI PDFF (default: typical "
                        "for age, 0.045 below 38 y, else 0.069; Sollmann 2020); under an in-scan pad it sets the "
                        "hip's iliopsoas anchor")
    parser.add_argument("--marrow-fat", type=float, metavar="FRACTION",
                        help="vertebral marrow fat (volume) fraction 0.05-0.95, e.g. from MR spectroscopy or PDFF: "
                        "the marrow base of the HA scale for muscle-fat, internal-multi and inscan (default: "
                        "typical for age, Griffith 2012; 0.5 when the age is unknown)")
    parser.add_argument("--erosion-mm", type=float, metavar="R", help="cortex removal radius in mm (default 3.2)")
    parser.add_argument("--age", type=float, help="patient age in years (default: from the DICOM header)")
    parser.add_argument("--sex", choices=("F", "M"), help="patient sex (default: from the DICOM header)")
    parser.add_argument("--z-reference", metavar="JSON",
                        help="hip Z-score reference table by age and sex (format: OpportunisticBMDLib/hip/tscores.py "
                        "load_age_reference); default: the built-in NHANES III rows")
    parser.add_argument("--device", default="cpu", help="device for the segmentation models: cpu | cuda")
    parser.add_argument("--backend", choices=BACKENDS, default="obmd",
                        help="segmentation without --seg: obmd (the shipped model, default) or totalsegmentator "
                        "(needs the TotalSegmentator package and its weights installed)")
    parser.add_argument("--json-only", action="store_true", help="write results.json only (no CSV, no masks)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from ..dicom.cli import add_dicom_arguments

    add_dicom_arguments(parser)
    parser.set_defaults(func=run)


def build_options(args: argparse.Namespace) -> object:
    from ..calibration import MARROW_FAT_FRACTION_RANGE, PSOAS_FAT_FRACTION_RANGE
    from ..errors import InputError
    from ..io import sex_code
    from ..pipeline import AnalysisOptions

    options = AnalysisOptions(calibration=args.calibration, device=args.device,
                              segmentation_backend=getattr(args, "backend", "obmd"))
    if args.erosion_mm is not None:
        if args.erosion_mm < 0:
            raise InputError(f"--erosion-mm {args.erosion_mm}: must be >= 0")
        options.erosion_radius_mm = args.erosion_mm
    options.muscle_density_mg_cm3 = args.muscle_density
    options.fat_density_mg_cm3 = args.fat_density
    params: dict = {}
    if args.calibration_file:
        params["file"] = args.calibration_file
    if args.slope is not None:
        params["slope"] = args.slope
    if args.intercept is not None:
        params["intercept"] = args.intercept
    if params and args.calibration in ("auto", "muscle-fat"):  # a phantom line given without naming the method
        options.calibration = "phantom"
    if getattr(args, "pad_densities", None):
        params["pad_densities"] = list(args.pad_densities)
    for flag, value, key, (low, high), example in (
            ("--psoas-fat", args.psoas_fat, "psoas_fat_fraction", PSOAS_FAT_FRACTION_RANGE, "0.07 for 7 %"),
            ("--marrow-fat", args.marrow_fat, "marrow_fat_fraction", MARROW_FAT_FRACTION_RANGE, "0.55 for 55 %")):
        if value is not None:
            if not low <= value <= high:
                raise InputError(f"{flag} {value}: a fraction between {low:g} and {high:g} (e.g. {example})")
            params[key] = value
    options.calibration_params = params
    options.patient_age = args.age  # None: the pipeline takes age and sex from the CT's header
    options.patient_sex = sex_code(args.sex)
    options.z_reference = args.z_reference
    if args.z_reference:  # fail before the analysis on a missing or malformed table
        from ..hip.tscores import load_age_reference

        try:
            load_age_reference(args.z_reference)
        except (OSError, ValueError) as exc:
            raise InputError(f"--z-reference: {exc}") from exc
    return options


def _fmt(value: object, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(results: dict, stream=None) -> None:
    stream = stream or sys.stdout
    levels = results["spine"]["levels"]
    print(f"{'level':<6}{'HU mean':>9}{'HU median':>11}{'vBMD mg/cm3':>13}{'ROI mm3':>10}  notes", file=stream)
    used = results["spine"]["summary"].get("levels_used") or []
    for level, v in levels.items():
        notes = []
        if level in used:
            notes.append("summary")
        if v.get("cut_by_fov"):
            notes.append("cut by FOV")
        if v.get("exclusion_reasons"):
            notes.append("excluded: " + ", ".join(v["exclusion_reasons"]))
        print(f"{level:<6}{_fmt(v.get('trabecular_hu_mean')):>9}{_fmt(v.get('trabecular_hu_median')):>11}"
              f"{_fmt(v.get('vbmd_mg_cm3')):>13}{_fmt(v.get('roi_volume_mm3'), '.0f'):>10}  {', '.join(notes)}",
              file=stream)
    s = results["spine"]["summary"]
    category = s.get("category") or ("not measurable" if s.get("vbmd_mg_cm3") is None else "no category")
    sd = s.get("vbmd_calibration_sd_mg_cm3")
    vbmd = _fmt(s.get("vbmd_mg_cm3")) + (f" +-{sd:.1f} (calibration, 1 SD)" if sd is not None else "")
    print(f"summary: vBMD {vbmd} mg/cm3 ({category}); HU {_fmt(s.get('trabecular_hu_mean'))}"
          f" - {s.get('note', '')}", file=stream)
    c = results["calibration"]
    details = c.get("details") or {}
    line = f"calibration: {c['method']}"
    if details.get("selected_by") == "auto":
        line += f" (auto: {details.get('auto_reason')})"
    if c.get("slope") is not None:
        line += f"  vBMD = {c['intercept']:.2f} + {c['slope']:.4f} x HU"
    if c.get("muscle_hu") is not None:
        line += f"; muscle {c['muscle_hu']:.1f} HU"
        if c.get("muscle_density_mg_cm3") is not None:
            line += f" = {c['muscle_density_mg_cm3']:.1f} mg/cm3"
    if c.get("fat_hu") is not None:
        line += f"; fat {c['fat_hu']:.1f} HU"
        if c.get("fat_density_mg_cm3") is not None:
            line += f" = {c['fat_density_mg_cm3']:.1f} mg/cm3"
    if c["method"] == "inscan" and details.get("rods"):
        rods = ", ".join(f"{r['nominal_mg_cm3']:g}: {r['hu']:.1f}" for r in details["rods"])
        line += (f"; pad base {details['base']['hu']:.1f} HU, rods (mg/cm3: HU) {rods}; "
                 f"R^2 {details['fit_r2']:.4f}")
    print(line, file=stream)
    from ..hip.pipeline_hook import hip_report_lines  # hip (hip engineer): neck / total hip aBMD, T, category

    for hip_line in hip_report_lines(results):
        print(hip_line, file=stream)
    for q in results.get("qc", []):
        print(f"qc {q['severity']}: [{q['code']}] {q['message']}", file=stream)
    print(status_line(results), file=stream)


def status_line(results: dict) -> str:
    """``status: complete`` or ``status: partial | not_measurable`` with its reasons (validity.py)."""
    reasons = results.get("status_reasons") or []
    return f"status: {results.get('status')}" + "".join(f"\n  - [{r['code']}] {r['message']}" for r in reasons)


def check_backend(args: argparse.Namespace) -> None:
    """Refuse an unusable ``--backend`` before reading the CT (a clear line, no traceback)."""
    from ..errors import InputError, ModelError

    backend = getattr(args, "backend", "obmd")
    if backend == "obmd":
        return
    if args.seg:
        raise InputError(f"--backend {backend} chooses the segmentation that runs without --seg; "
                         "with --seg LABELS no segmentation runs: drop one of the two")
    from ..models import totalseg_backend

    if backend == "totalsegmentator" and not totalseg_backend.available():
        raise ModelError(totalseg_backend.MISSING_MESSAGE)


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
        options = build_options(args)
        result = analyze(ct, labels, options, progress=progress, body_mask=body)
        dicom_cli.record_source(args, result, series_choice)  # input.ct of a PACS study, input.series_choice
        # results.json, results.csv, masks, report.pdf and OUT/dicom: the folder Slicer and the web app save too
        report = write_report_folder(result, ct, staging, dicom_cli.report_folder_options(args))
        dicom_cli.print_written(args, report)
        written = report.files
    print_report(result.results)
    n_masks = sum(1 for k in written if k.startswith("masks/"))
    print(f"wrote {out / 'results.json'}" + (f", results.csv and {n_masks} masks" if n_masks else "")
          + f" in {time.perf_counter() - start:.1f} s")
    dicom_cli.store(args, out)  # --store: SEG, SR, PDF back to the PACS (after the folder is in place)
    return EXIT_NOT_MEASURABLE if result.results.get("status") == STATUS_NOT_MEASURABLE else 0
