"""``obmd bench hip``: CTXA-like hip aBMD against the truth of digital patients.

* Accuracy: N digital patients (``obmd phantom --region hip``); measured neck / total hip aBMD and
  T-scores vs the truth computed from each phantom's own density map and true axes
  (:func:`OpportunisticBMDLib.hip.truth.hip_truth`). ``--calibration exact`` (default): the phantom's
  exact HA line (``truth.exact_calibration``), so the figures isolate the hip method (positioning,
  projection, regions, cortical/marrow HA mapping, local calibration transfer); the spine
  calibration's own error adds on top. The exact line holds for an offset-free scanner; the
  realistic scan adds cupping and a smooth offset field, so the hip's local check
  (:mod:`OpportunisticBMDLib.hip.local_calibration`) needs the reference muscle HU "where the line
  holds": the psoas ROI (the pipeline's ``muscle_roi``) read on the same patient's ideal scan (same
  anatomy and kVp, no scanner offsets) -- what an exact calibration would have recorded; no truth
  value enters the measurement. ``--calibration muscle-fat|internal-multi``: end to end, a digital
  patient from T12 to the femurs through ``pipeline.analyze`` (spine ROIs, calibration, hip with the
  local check against the spine ROIs); these figures include the calibration's own error.
  ``--calibration inscan``: end to end likewise, the digital patients scanned with the in-scan calibration
  pad (``PhantomOptions.calibration_pad``) that ``pipeline.analyze`` finds and calibrates from.
  ``--no-local-calibration``: the spine's line unchanged at the hip (before/after). ``--segmentation
  model``: end to end with the shipped model's labels instead of the phantom's (``obmd analyze``
  without ``--seg``, the default user path); the truth stays the phantom's density map and axes.
* Precision: rescans of the first patients (new noise, repositioning up to +-5 mm, other kVp, other
  kernel), RMS-CV % (Gluer et al., Osteoporos Int 1995;5:262); CTXA reports 1.8-2.0 % (Cann 2014).
* Positioning: an analytic femur rotated +-15 deg in the scanner; neck / total hip aBMD change %.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from ..calibration import CALIBRATIONS, Calibration
from ..errors import InputError
from ..hip import HipOptions, analyze_hips
from ..hip.analytic import AnalyticFemur, IdentityCalibration
from ..hip.local_calibration import reference_tissue_hu
from ..phantom.generator import generate_phantom
from ..phantom.options import PhantomOptions
from ..pipeline import analyze, derive_rois
from ..settings import AnalysisOptions
from ._cohort import patient_age
from .common import add_json_option, peak_rss_mb, write_json
from .precision import rescan_options

REGIONS = ("neck", "total_hip")
EXACT = "exact"  # the phantom's own HA line (truth.exact_calibration): isolates the hip method
# end to end through the pipeline: every registered method that needs no phantom scan
END_TO_END_METHODS = tuple(m.name for m in CALIBRATIONS.values() if not m.needs_phantom_line)
END_TO_END_FOV = ("T12", "femur")  # spine reference ROIs (T12-L4) and both hips


@dataclass(frozen=True)
class HipBenchConfig:
    """How one ``obmd bench hip`` run measures (its flags)."""

    calibration: str = EXACT
    local_calibration: bool = True
    segmentation: str = "truth"  # "truth" | "model"
    psoas_fat: str = "typical"  # "typical" | "truth"
    marrow_fat: str = "typical"  # "typical" | "truth"

    @property
    def end_to_end(self) -> bool:
        return self.calibration != EXACT


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("hip", help="hip aBMD accuracy, precision and rotation independence",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="digital patients for accuracy (default 4)")
    parser.add_argument("--seed", type=int, default=500, help="first phantom seed (default 500)")
    parser.add_argument("--precision-patients", type=int, default=2, help="patients rescanned (default 2)")
    parser.add_argument("--scans", type=int, default=4, help="scans per rescanned patient (default 4)")
    parser.add_argument("--rotation-patients", type=int, default=1,
                        help="digital patients rescanned with the legs rotated -15/0/+15 deg (default 1; 0: none)")
    parser.add_argument("--calibration", default=EXACT, choices=(EXACT, *END_TO_END_METHODS),
                        help=f"{EXACT}: the phantom's HA line (isolates the hip method, default); "
                        f"{', '.join(END_TO_END_METHODS)}: end to end through the pipeline on T12-to-femur "
                        "digital patients (inscan: scanned with a calibration pad)")
    parser.add_argument("--no-local-calibration", action="store_true",
                        help="use the spine's line unchanged at the hip (no local muscle check)")
    parser.add_argument("--segmentation", choices=("truth", "model"), default="truth",
                        help="end to end only: the phantom's own labels (default) or the shipped model's, as "
                        "'obmd analyze' without --seg (the truth's femur geometry and density map stay the reference)")
    parser.add_argument("--psoas-fat", choices=("typical", "truth"), default="typical",
                        help="end to end only: the psoas fat the calibration assumes -- age-typical (default, as "
                        "'obmd analyze'), or the patient's own given as a user would with 'obmd analyze "
                        "--psoas-fat' (splits the reference tissue's composition error from the rest)")
    parser.add_argument("--marrow-fat", choices=("typical", "truth"), default="typical",
                        help="end to end only: the vertebral marrow fat of the HA scale's base -- age-typical "
                        "(default), or the patient's own as with 'obmd analyze --marrow-fat' (splits single-energy "
                        "QCT's marrow-fat error from the rest)")
    add_json_option(parser)
    parser.set_defaults(func=run)


def _exact_calibration(truth: dict) -> Calibration:
    ex = truth["exact_calibration"]
    return Calibration("phantom-exact", float(ex["slope_mg_cm3_per_hu"]), float(ex["intercept_mg_cm3"]))


def _reference_hu(phantom) -> dict | None:
    """Psoas (pipeline ``muscle_roi``) and fat ROI HU of a scan, as the spine calibration reads them."""
    try:
        rois = derive_rois(phantom.ct, phantom.labels, AnalysisOptions())
    except Exception:  # noqa: BLE001 - no vertebra in view: no reference
        return None
    return reference_tissue_hu(phantom.ct.array, rois)


def _end_to_end_options(truth: dict, config: HipBenchConfig) -> AnalysisOptions:
    """As ``obmd analyze`` gets them from a DICOM header (the patient's age: age-typical marrow and psoas
    fat) and, with ``--psoas-fat/--marrow-fat truth``, the patient's own compositions as a user gives them."""
    patient = truth["patient"]
    return AnalysisOptions(calibration=config.calibration, patient_age=patient_age(truth)).with_calibration(
        psoas_fat_fraction=float(patient["muscle_fat_infiltration"]) if config.psoas_fat == "truth" else None,
        marrow_fat_fraction=float(patient["marrow_fat_fraction"]) if config.marrow_fat == "truth" else None)


def _measure(phantom, config: HipBenchConfig, twin_kw: dict | None = None) -> dict:
    """Hip results of one scan. Exact line: the local check's reference is read on the ideal twin
    (``twin_kw``: the phantom options, ideal=True added); end to end: ``pipeline.analyze``."""
    truth = phantom.truth
    if config.end_to_end:
        phantom.ct.metadata["kvp"] = float(truth["scanner"]["kvp"])  # as a DICOM header gives it
        labels = None if config.segmentation == "model" else phantom.labels  # None: the shipped model segments
        analysed = analyze(phantom.ct, labels, _end_to_end_options(truth, config))
        if config.local_calibration:
            return analysed.results["hip"]
        # the same spine line, unchanged at the hip
        unchanged = HipOptions(kvp=float(truth["scanner"]["kvp"]), local_calibration=False)
        return analyze_hips(phantom.ct, analysed.labels, analysed.calibration, unchanged)[0]
    opts = HipOptions(kvp=float(truth["scanner"]["kvp"]), local_calibration=config.local_calibration)
    reference = None
    if config.local_calibration and twin_kw is not None:
        twin = phantom if twin_kw.get("ideal") else _phantom(truth["seed"], config, **{**twin_kw, "ideal": True,
                                                                                       "hip_truth": False})
        reference = _reference_hu(twin)
    results, _, _ = analyze_hips(phantom.ct, phantom.labels, _exact_calibration(truth), opts, reference_hu=reference)
    return results


def _phantom(seed: int, config: HipBenchConfig, **kw):
    if config.end_to_end:
        kw = {"region": "torso", "fov_levels": END_TO_END_FOV, **kw}
    if config.calibration == "inscan":
        kw = {"calibration_pad": True, **kw}
    return generate_phantom(seed, PhantomOptions(**{"region": "hip", **kw}))


def accuracy(n: int, seed: int, config: HipBenchConfig, log=print, ideal: bool = False) -> dict:
    rows = []
    for s in range(seed, seed + n):
        ph = _phantom(s, config, ideal=ideal)
        measured = _measure(ph, config, {"ideal": ideal})
        for side in ("left", "right"):
            true_side = ph.truth.get("hip", {}).get(side, {})
            m_side = measured.get(side) or {}
            if m_side.get("excluded_reason") or "neck" not in true_side:
                log(f"  seed {s} {side}: excluded ({m_side.get('excluded_reason') or 'no truth'})")
                continue
            for region in REGIONS:
                m, t = m_side.get(region), true_side.get(region)
                if not m or not t:
                    continue
                err = 100.0 * (m["abmd_g_cm2"] / t["abmd_g_cm2"] - 1.0)
                rows.append({"seed": s, "side": side, "region": region, "measured_g_cm2": m["abmd_g_cm2"],
                             "true_g_cm2": t["abmd_g_cm2"], "error_percent": err,
                             "t_error": m["t_score"] - t["t_score"]})
                log(f"  seed {s} {side:5s} {region:9s} measured {m['abmd_g_cm2']:.4f}  true {t['abmd_g_cm2']:.4f}"
                    f"  error {err:+.2f} %  T error {m['t_score'] - t['t_score']:+.3f}")
    out = {}
    for region in REGIONS:
        errs = np.array([r["error_percent"] for r in rows if r["region"] == region])
        terr = np.array([r["t_error"] for r in rows if r["region"] == region])
        if len(errs):
            out[region] = {"n": int(len(errs)), "mean_error_percent": float(errs.mean()),
                           "max_abs_error_percent": float(np.abs(errs).max()),
                           "rms_error_percent": float(np.sqrt((errs**2).mean())),
                           "max_abs_t_error": float(np.abs(terr).max())}
    return {"per_region": out, "rows": rows}


def precision(patients: int, scans: int, seed: int, config: HipBenchConfig, log=print) -> dict:
    cvs: dict[str, list[float]] = {r: [] for r in REGIONS}
    rng = np.random.default_rng(seed)
    for s in range(seed, seed + patients):
        base_kvp = 120.0
        values: dict[tuple[str, str], list[float]] = {}
        for i in range(scans):
            kw = rescan_options(i, base_kvp, rng)
            ph = _phantom(s, config, **kw)
            res = _measure(ph, config, {k: v for k, v in kw.items() if k in ("kvp", "grid_shift_mm")})
            for side in ("left", "right"):
                for region in REGIONS:
                    entry = (res.get(side) or {}).get(region)
                    if entry:
                        values.setdefault((side, region), []).append(entry["abmd_g_cm2"])
        for (side, region), v in values.items():
            if len(v) == scans:
                cv = float(np.std(v, ddof=1) / np.mean(v) * 100.0)
                cvs[region].append(cv)
                log(f"  seed {s} {side:5s} {region:9s} aBMD {np.mean(v):.4f} CV {cv:.2f} %  ({scans} scans)")
    return {r: {"n": len(c), "rmscv_percent": float(np.sqrt(np.mean(np.square(c)))) if c else None}
            for r, c in cvs.items()}


def rotation(log=print) -> dict:
    def measure(rot: float) -> dict:
        f = AnalyticFemur(rotation_deg=rot)
        dens, lab, _ = f.volumes(spacing_mm=(1.5, 1.5, 1.5), shape_mm=(180.0, 100.0, 140.0),
                                 head_offset_mm=(140.0, 50.0, None))
        res, _, _ = analyze_hips(dens, lab, IdentityCalibration(), HipOptions(cortical_correction=False))
        return res["right"]

    base = measure(0.0)
    out = {}
    for rot in (-15.0, 15.0):
        r = measure(rot)
        for region in REGIONS:
            d = 100.0 * (r[region]["abmd_g_cm2"] / base[region]["abmd_g_cm2"] - 1.0)
            out[f"{region}_{rot:+.0f}deg_percent"] = d
            log(f"  analytic femur rotated {rot:+.0f} deg: {region} aBMD change {d:+.2f} %")
    out["max_abs_neck_change_percent"] = max(abs(out[k]) for k in out if k.startswith("neck"))
    return out


def rotation_digital(patients: int, seed: int, config: HipBenchConfig, log=print) -> dict:
    """The same digital patients scanned with both legs rotated -15 / 0 / +15 deg about the shaft
    (``leg_rotation_deg``: positioning, the anatomy unchanged): each hip's neck and total hip aBMD change
    from its 0 deg reading (realistic scans; the calibration as for accuracy)."""
    out: dict = {"per_hip": []}
    for s in range(seed, seed + patients):
        readings = {}
        for rot in (0.0, -15.0, 15.0):
            kw = {"leg_rotation_deg": rot, "hip_truth": False}
            readings[rot] = _measure(_phantom(s, config, **kw), config, twin_kw=kw)
        for side in ("left", "right"):
            if not all(isinstance(readings[r].get(side), dict) and readings[r][side].get("neck") for r in readings):
                continue
            for rot in (-15.0, 15.0):
                row = {"seed": s, "side": side, "rotation_deg": rot}
                for region in REGIONS:
                    base, moved = readings[0.0][side][region]["abmd_g_cm2"], readings[rot][side][region]["abmd_g_cm2"]
                    row[f"{region}_change_percent"] = 100.0 * (moved / base - 1.0)
                log(f"  seed {s} {side:5s} legs rotated {rot:+.0f} deg: neck {row['neck_change_percent']:+.2f} %, "
                    f"total hip {row['total_hip_change_percent']:+.2f} %")
                out["per_hip"].append(row)
    for region in REGIONS:
        values = [abs(r[f"{region}_change_percent"]) for r in out["per_hip"]]
        out[f"max_abs_{region}_change_percent"] = max(values) if values else None
    return out


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    config = HipBenchConfig(calibration=args.calibration, local_calibration=not args.no_local_calibration,
                            segmentation=args.segmentation, psoas_fat=args.psoas_fat, marrow_fat=args.marrow_fat)
    end_to_end = f"an end-to-end calibration (--calibration {', '.join(END_TO_END_METHODS)})"
    if config.segmentation == "model" and not config.end_to_end:
        raise InputError(f"--segmentation model needs {end_to_end}")
    if "truth" in (config.psoas_fat, config.marrow_fat) and not config.end_to_end:
        raise InputError(f"--psoas-fat/--marrow-fat truth need {end_to_end}")
    print(f"calibration: {args.calibration}; local calibration check at the hip: "
          f"{'on' if config.local_calibration else 'off'}")
    line = {"exact": "the exact HA line", "inscan": "inscan from the calibration pad in the scan"}.get(
        args.calibration, f"{args.calibration} from the spine ROIs")
    print(f"hip accuracy on {args.n} ideal digital patients (no noise/blur/offsets; seed {args.seed}..; {line}):")
    acc_ideal = accuracy(args.n, args.seed, config, ideal=True)
    print(f"hip accuracy on {args.n} realistic digital patients (noise, blur, cupping, offset fields; same seeds):")
    acc = accuracy(args.n, args.seed, config)
    print(f"hip precision: {args.precision_patients} patients x {args.scans} scans:")
    prec = precision(args.precision_patients, args.scans, args.seed + 1000, config)
    print("positioning independence:")
    rot = rotation()
    rot_digital = rotation_digital(args.rotation_patients, args.seed, config) if args.rotation_patients else {}
    print("\nregion     n  mean err %  max|err| %  max|T err|  RMSCV %   (targets: |err| <= 1 %, |T err| <= 0.1, "
          "CV <= 1.5 %)")
    for label, block in (("ideal", acc_ideal), ("realistic", acc)):
        print(label)
        for region in REGIONS:
            a = block["per_region"].get(region, {})
            p = prec.get(region, {}) if label == "realistic" else {}
            print(f"{region:9s} {a.get('n', 0):2d}  {a.get('mean_error_percent', float('nan')):+9.2f}"
                  f"  {a.get('max_abs_error_percent', float('nan')):10.2f}"
                  f"  {a.get('max_abs_t_error', float('nan')):10.3f}  {p.get('rmscv_percent') or float('nan'):7.2f}")
    print(f"rotation +-15 deg: max neck aBMD change {rot['max_abs_neck_change_percent']:.2f} % (target <= 1.5 %)")
    if rot_digital.get("max_abs_neck_change_percent") is not None:
        print(f"digital patients' legs rotated +-15 deg: max neck aBMD change "
              f"{rot_digital['max_abs_neck_change_percent']:.2f} %, total hip "
              f"{rot_digital['max_abs_total_hip_change_percent']:.2f} % (target <= 1.5 %)")
    figures = {"calibration": config.calibration, "local_calibration": config.local_calibration,
               "segmentation": config.segmentation, "psoas_fat": config.psoas_fat, "marrow_fat": config.marrow_fat,
               "accuracy_ideal": acc_ideal, "accuracy": acc, "precision": prec, "rotation": rot,
               "rotation_digital": rot_digital,
               "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}
    write_json(args.json, figures)
    return 0
