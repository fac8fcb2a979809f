"""Quality-control flags: ``{"code", "severity" (info|warning|error), "message"}`` dicts for results.json."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .calibration import CALIBRATIONS
from .calibration.composition import REFERENCE_KVP, muscle_fat_densities
from .calibration.registry import LINE_FROM_PAD, LINE_FROM_PHANTOM, methods_with_line_from
from .labels import LABELS
from .spine import FRACTURE_HEIGHT_LOSS, MIN_ROI_VOLUME_MM3
from .volume import Volume

# Unenhanced lean skeletal muscle measures ~ 40-60 HU, lower with fat infiltration (Goodpaster et al.,
# J Appl Physiol 89:104 (2000)); a psoas ROI mean outside 20..80 HU probably caught fat, bone or contrast
# (range: design choice around those values).
MUSCLE_HU_RANGE = (20.0, 80.0)
# Subcutaneous fat averages about -90 to -120 HU inside the -190..-30 adipose window (Kvist et al., Am J
# Clin Nutr 48:1351 (1988)); a mean outside -150..-60 HU means noise, partial volume with skin/muscle or a
# wrong region (range: design choice).
FAT_HU_RANGE = (-150.0, -60.0)
# Beyond these the ROI is not the tissue at all (a psoas ROI below 0 HU is mostly fat; above 100 HU it holds
# bone or contrast; a fat ROI outside the adipose window -190..-30 HU of Kvist 1988 is not fat): the line
# through them is not a calibration, so its vBMD and categories are withheld (validity.py). Inside them and
# outside the ranges above is a warning only: a fatty psoas at 18 HU on a digital patient at 3 mm still
# read L1-L2 within 6 mg/cm3 of truth (seed 3; design choice).
MUSCLE_HU_USABLE = (0.0, 100.0)
FAT_HU_USABLE = (-190.0, -30.0)
# Very thin subcutaneous fat made the reference study fail (Radiologic Practice 2024,
# doi:10.13609/j.cnki.1000-0313.2024.02.019); below ~5 mm (two voxels of a 2.5 mm reconstruction)
# partial volume with skin and muscle dominates the layer's mean HU (design choice).
MIN_FAT_THICKNESS_MM = 5.0
# Unenhanced blood is 30-60 HU; arterial/portal phases raise the aorta/IVC well above 150 HU
# (Kaesmacher et al., J Comput Assist Tomogr 41:217 (2017) saw contrast raise vertebral HU too).
CONTRAST_BLOOD_HU = 150.0
# Metal: above the densest cortical bone (~1800-2000 HU) at usual kVp (design choice 2500 HU).
METAL_HU = 2500.0
METAL_NEAR_MM = 20.0
# Trabecular bone of adult lumbar vertebrae measures roughly 50-300 HU (Pickhardt et al., Ann Intern Med
# 158:588 (2013): L1 mean ~ 150-250 HU in young adults, < 110 HU in osteoporosis); a trabecular ROI mean
# above 400 HU means cortex, sclerosis (metastasis, Paget, fusion) or a wrong segmentation.
MAX_TRABECULAR_HU = 400.0
# ... and below -50 HU the ROI holds fat or air, not bone: even wholly fatty marrow with little bone stays
# above ~0 HU at the lowest densities QCT reports (design choice, with margin for noise).
MIN_TRABECULAR_HU = -50.0
# Trabecular vBMD of adult lumbar vertebrae: the ACR-SPR-SSR QCT practice parameter (2018) calls > 120 mg/cm3
# normal and < 80 osteoporosis; young adults read under ~250. Outside -50..400 mg/cm3 the calibration line or
# the ROI is wrong, not the bone (design choice with a wide margin either side).
VBMD_PLAUSIBLE_MG_CM3 = (-50.0, 400.0)
# Adult T12-L5 vertebral bodies hold 20-60 cm3 (TotalSegmentator's report on the shared example: 34-39 ml);
# a whole (not cut) body under 10 cm3 is an incomplete segmentation (design choice).
MIN_BODY_VOLUME_MM3 = 10000.0
# Level flags that keep a level out of the summary when other levels are usable (ISCD/ACR: exclude
# fractured vertebrae and those with focal lesions or artefacts from the vBMD mean).
EXCLUDING_CODES = frozenset({"roi_empty", "roi_too_small", "height_loss", "trabecular_hu_implausible",
                             "vbmd_implausible", "body_small", "metal_near_roi", "roi_skewed"})
# A trabecular ROI's HU are near-symmetric about their median (noise on a smooth marrow); a mean pulled far
# above (or below) the median means a tail of cortex/endplate (or fat/air) inside the ROI. Design choice from
# the levels at hand: valid levels read |mean - median| <= 15 HU (shared real CT, given labels: 1-14.5 HU,
# 0.02-0.19 SD; digital patients 0-4 HU), while a model ROI left with cortex after a reduced erosion read
# +69 HU (0.49 SD; vBMD 143 beside its neighbours' 77: the user-trial case `obmd phantom --seed 3 --region
# spine --spacing-mm 3 3 3 --bmd 70`, no --seg). Both limits must be passed, so a noisy but clean ROI is kept.
ROI_SKEW_MAX_HU = 25.0
ROI_SKEW_MAX_SD_FRACTION = 0.3
# Scan-level flags that withhold the spine's summary vBMD and ACR category whatever the levels show
# (validity.spine_blockers; the per-level numbers stay in results.json for review).
SUMMARY_BLOCKING_CODES: frozenset[str] = frozenset()

# Slice thickness and spacing. Measured with ``obmd bench thickness --seeds 3000 3001 3002 3003 3004
# --thickness-mm 1 2 3 4 5 6 8 10 --modes contiguous overlap gap --real-ct ../shared/data/totalseg-example/ct.nii.gz
# --real-seg ../shared/data/totalseg-example/ct_seg_total.nii.gz``: 1 mm digital patients thickened by a boxcar
# (a thick slice is the mean of the thin ones it covers), labels by majority; L1-L2 vBMD thick minus thin of
# the same scan over 5 patients x up to 3 slab positions (mg/cm3; the summary's stated SD is ~7.3).
# Before spine.z_clearance_mm, slices thicker or farther apart than the 3.2 mm erosion kept the endplate:
# contiguous 4-10 mm +27 to +34 (single scans up to +50), 5-6 mm slices 2 mm apart +11 / +16, the real CT
# made 6 / 9 mm +10 to +14. With it (a kept voxel lies farther from the outside than its slice is thick):
# contiguous 2-8 mm +1.2 to +2.0 mean (max +5.5), overlapping 3-10 mm (2 or 3 mm apart) +1.3 to +2.7 (max
# +5.8), 1 mm slices 2-10 mm apart -0.1 to +0.7; the real CT made 6 mm -3.9 / -5.0, 9 mm -5.4 to -10.4; but
# contiguous 10 mm +16.9 +- 9.8 (to +32: a ~25 mm body then holds two or three slices, the ROI one or none).
# Mid-vertebral ROIs do not depend on the thickness (Bae et al., Am J Vet Res 2014;75:642: the same BMD from
# 2.4, 4.8 and 9.6 mm slices). So: up to 3 mm nothing; up to 8 mm a warning stating the measured bias;
# thicker or farther apart than 8 mm the summary is withheld (its bias exceeds the stated SD).
SLICE_THICKNESS_WARN_MM = 3.0
SLICE_THICKNESS_WITHHOLD_MM = 8.0
THICK_SLICE_BIAS_MG_CM3 = 2.0  # expected bias 3-8 mm, digital patients (mean of the layouts above)
THICK_SLICE_BIAS_RANGE_MG_CM3 = (-5.0, 6.0)  # the measured spread 3-8 mm: phantom max +5.8, real CT 6 mm -5.0
TOO_THICK_SLICE_BIAS_MG_CM3 = 17.0  # contiguous 10 mm, digital patients (real CT 9 mm: -5 to -10)
# Paraspinal instead of psoas muscle (no iliopsoas label at the measured levels). Measured (``obmd bench
# muscle-substitution --real-ct ../shared/data/totalseg-example/ct.nii.gz --real-seg
# ../shared/data/totalseg-example/ct_seg_total.nii.gz``: the same labels with and without the iliopsoas; 10
# digital patients, seeds 3000-3009): muscle-fat +7.2 +- 6.4
# mg/cm3 (-7.4 to +14.7; their paraspinals hold 1.5 x the psoas fat + 3 %, a modelling assumption), the real CT
# +19.3 (paraspinal 21 HU vs psoas 36 HU: real paraspinals are fattier); internal-multi, which weights the
# muscle least, +0.3 +- 0.3 (real CT +1.2). The stated SD is ~7 mg/cm3: the real CT's bias is ~3 SD, the
# digital patients' about 1 SD, so the muscle-fat category is withheld. The stated figure is the real CT's
# (real anatomy; the digital patients' paraspinal fat is assumed, not measured). Each method registers its
# figures (``paraspinal_bias_mg_cm3`` in calibration/muscle_fat.py, internal_multi.py); a bias above the stated
# SD withholds the category.
PARASPINAL_WITHHOLD_ABOVE_MG_CM3 = 7.0  # the summary's stated 1 SD (muscle-fat, ~7 mg/cm3)
# Scan-level codes that withhold the spine summary's vBMD and ACR category (validity.spine_blockers; the
# per-level numbers stay in results.json for review): their expected bias exceeds the summary's stated SD
# (measurements above).
SUMMARY_BLOCKING_CODES = frozenset({"slice_too_thick", "muscle_not_psoas"})


def flag(code: str, severity: str, message: str) -> dict[str, str]:
    assert severity in ("info", "warning", "error")
    return {"code": code, "severity": severity, "message": message}


def level_flags(level: str, measurement: dict[str, Any]) -> list[dict[str, str]]:
    """Flags of one measured level (``spine.levels.<level>`` dict)."""
    flags = []
    if measurement.get("cut_by_fov"):
        flags.append(flag("level_cut_by_fov", "warning",
                          f"{level} touches the top or bottom of the scan: partly outside the field of view"))
    volume = measurement.get("roi_volume_mm3") or 0.0
    if measurement.get("voxel_count", 0) == 0:
        flags.append(flag("roi_empty", "error", f"{level}: trabecular ROI is empty"))
    elif volume < MIN_ROI_VOLUME_MM3:
        flags.append(flag("roi_too_small", "warning",
                          f"{level}: trabecular ROI is only {volume:.0f} mm3 (< {MIN_ROI_VOLUME_MM3:.0f} mm3)"))
    mean_hu = measurement.get("trabecular_hu_mean")
    if mean_hu is not None and mean_hu > MAX_TRABECULAR_HU:
        flags.append(flag("trabecular_hu_implausible", "warning",
                          f"{level}: trabecular mean {mean_hu:.0f} HU (> {MAX_TRABECULAR_HU:.0f}): cortex, sclerosis "
                          "or a segmentation error in the ROI; level left out of the summary"))
    elif mean_hu is not None and mean_hu < MIN_TRABECULAR_HU:
        flags.append(flag("trabecular_hu_implausible", "warning",
                          f"{level}: trabecular mean {mean_hu:.0f} HU (< {MIN_TRABECULAR_HU:.0f}): fat or air, not "
                          "bone, in the ROI (a segmentation or orientation error); level left out of the summary"))
    median_hu, sd_hu = measurement.get("trabecular_hu_median"), measurement.get("trabecular_hu_sd")
    if None not in (mean_hu, median_hu, sd_hu):
        skew_hu = mean_hu - median_hu
        if abs(skew_hu) > ROI_SKEW_MAX_HU and abs(skew_hu) > ROI_SKEW_MAX_SD_FRACTION * sd_hu:
            flags.append(flag("roi_skewed", "warning",
                              f"{level}: trabecular mean {mean_hu:.0f} HU lies {skew_hu:+.0f} HU from the median "
                              f"{median_hu:.0f} HU: {'cortex or endplate' if skew_hu > 0 else 'fat or air'} inside "
                              "the ROI; level left out of the summary"))
    vbmd = measurement.get("vbmd_mg_cm3")
    low, high = VBMD_PLAUSIBLE_MG_CM3
    if vbmd is not None and not low <= vbmd <= high:
        flags.append(flag("vbmd_implausible", "warning",
                          f"{level}: vBMD {vbmd:.0f} mg/cm3 is outside {low:.0f}..{high:.0f}: the calibration line or "
                          "the ROI is wrong; level left out of the summary"))
    body_mm3 = measurement.get("body_volume_mm3")
    if body_mm3 is not None and not measurement.get("cut_by_fov") and 0 < body_mm3 < MIN_BODY_VOLUME_MM3:
        flags.append(flag("body_small", "warning",
                          f"{level}: vertebral body only {body_mm3 / 1000:.1f} cm3 "
                          f"(< {MIN_BODY_VOLUME_MM3 / 1000:.0f}): the segmentation is probably incomplete"))
    if measurement.get("erosion_reduced"):
        flags.append(flag("erosion_reduced", "warning",
                          f"{level}: body too thin for the cortex erosion; radius reduced to "
                          f"{measurement.get('erosion_radius_mm', 0):.1f} mm (cortex may remain in the ROI)"))
    loss = measurement.get("height_loss")
    heights = [measurement.get(f"height_{p}_mm") for p in ("anterior", "middle", "posterior")]
    # a difference under two slices is quantization of the heights, not anatomy (e.g. 3 mm slices)
    step = measurement.get("slice_thickness_mm") or 0.0
    resolved = None not in heights and max(heights) - min(heights) >= 2 * step - 1e-6
    if loss is not None and loss >= FRACTURE_HEIGHT_LOSS and resolved and not measurement.get("cut_by_fov"):
        flags.append(flag("height_loss", "warning",
                          f"{level}: {loss * 100:.0f} % height difference (anterior/middle/posterior): possible "
                          "vertebral fracture (Genant grade >= 1 is >= 20 %); check the image, vBMD of a "
                          "fractured vertebra is unreliable"))
    return flags


def missing_level_flags(present: list[str], wanted: tuple[str, ...] = ("T12", "L1", "L2")) -> list[dict[str, str]]:
    return [flag("level_missing", "warning" if lvl in ("L1", "L2") else "info",
                 f"{lvl} is not in the segmentation (outside the scan or not segmented)")
            for lvl in wanted if lvl not in present]


def calibration_flags(calibration: dict[str, Any], fat_thickness_mm: float | None) -> list[dict[str, str]]:
    flags = []
    muscle, fat = calibration.get("muscle_hu"), calibration.get("fat_hu")
    # (code, severity, tissue, HU, range, consequence): the warning range, then the range beyond which the
    # ROI is not that tissue at all (an error that withholds a tissue line: validity.TISSUE_LINE_CODES)
    checks = (("muscle_hu_implausible", "warning", "muscle", muscle, MUSCLE_HU_RANGE, ""),
              ("fat_hu_implausible", "warning", "fat", fat, FAT_HU_RANGE, ""),
              ("muscle_hu_unusable", "error", "muscle", muscle, MUSCLE_HU_USABLE,
               ": not muscle (fat, bone or contrast in the ROI)"),
              ("fat_hu_unusable", "error", "fat", fat, FAT_HU_USABLE, ": not fat (outside the adipose window)"))
    for code, severity, tissue, hu, (low, high), consequence in checks:
        if hu is not None and not low <= hu <= high:
            flags.append(flag(code, severity, f"{tissue} ROI mean {hu:.0f} HU is outside {low:.0f}..{high:.0f} HU"
                              + consequence))
    details = calibration.get("details") or {}
    if details.get("kvp_source") == "assumed":
        flags.append(flag("kvp_assumed", "info",
                          f"tube voltage unknown (no KVP in the image header): {calibration.get('method')} "
                          f"assumed {details.get('kvp', 120):g} kVp"))
    if fat_thickness_mm is not None and fat_thickness_mm < MIN_FAT_THICKNESS_MM:
        flags.append(flag("fat_too_thin", "warning",
                          f"anterior subcutaneous fat is only {fat_thickness_mm:.1f} mm thick "
                          f"(< {MIN_FAT_THICKNESS_MM:.0f} mm): the fat reference is unreliable"))
    return flags


# A line from outside the patient (a phantom's, a pad's) must still put the patient's own psoas and fat near
# their HA-equivalent densities (calibration.muscle_fat_densities: about +40 and -60 mg/cm3 at 120 kVp). The
# patient's composition moves them by ~10 mg/cm3 (psoas fat SD 2.9 %, Sollmann 2020; fat -80..-120 HU under a
# ~0.7 slope); more than 50 mg/cm3 off means a mistyped line or a wrong phantom file (design choice).
LINE_TISSUE_TOLERANCE_MG_CM3 = 50.0
EXTERNAL_LINE_METHODS = methods_with_line_from(LINE_FROM_PHANTOM, LINE_FROM_PAD)


def line_tissue_flags(calibration: dict[str, Any]) -> list[dict[str, str]]:
    """``calibration_line_implausible`` when a phantom or pad line reads the patient's muscle or fat far from
    what those tissues are."""
    slope, intercept = calibration.get("slope"), calibration.get("intercept")
    muscle_hu, fat_hu = calibration.get("muscle_hu"), calibration.get("fat_hu")
    if calibration.get("method") not in EXTERNAL_LINE_METHODS or None in (slope, intercept, muscle_hu, fat_hu):
        return []
    kvp = (calibration.get("details") or {}).get("kvp") or REFERENCE_KVP
    expected = muscle_fat_densities(round(float(kvp), 1))
    read = (intercept + slope * muscle_hu, intercept + slope * fat_hu)
    off = [f"{name} reads {got:.0f} mg/cm3 (expected about {want:.0f})"
           for name, got, want in zip(("psoas", "fat"), read, expected, strict=True)
           if abs(got - want) > LINE_TISSUE_TOLERANCE_MG_CM3]
    if not off:
        return []
    return [flag("calibration_line_implausible", "warning",
                 f"the {calibration['method']} line (vBMD = {intercept:.1f} + {slope:.3f} x HU) does not fit this "
                 f"patient: {'; '.join(off)}; check the slope/intercept or the calibration file")]


def contrast_flags(ct: Volume, labels: Volume | None) -> list[dict[str, str]]:
    """Probable IV contrast: DICOM ContrastBolusAgent present, or aorta/IVC mean > 150 HU."""
    flags = []
    agent = str(ct.metadata.get("contrast_agent", "") or "").strip()
    if agent and agent.upper() not in ("NONE", "NO", "N"):
        flags.append(flag("contrast", "warning",
                          f"DICOM ContrastBolusAgent is '{agent}': contrast raises trabecular HU and vBMD"))
    if labels is not None:
        for name in ("aorta", "inferior_vena_cava"):  # arterial phase: aorta only; venous: both
            vessel = labels.array == LABELS[name]
            if vessel.sum() < 10:
                continue
            blood_hu = float(np.median(ct.array[vessel]))
            if blood_hu > CONTRAST_BLOOD_HU:
                flags.append(flag("contrast", "warning",
                                  f"{name.replace('_', ' ')} median {blood_hu:.0f} HU (> {CONTRAST_BLOOD_HU:.0f}): "
                                  "probable contrast enhancement; vBMD is overestimated"))
                break
    return flags


def metal_near_levels(ct: Volume, trabecular_rois: dict[str, np.ndarray]) -> list[str] | None:
    """Levels whose trabecular ROI has metal (> 2500 HU) within 20 mm; None when the scan has no metal."""
    metal = ct.array > METAL_HU
    if not metal.any():
        return None
    near: list[str] = []
    union = np.zeros(ct.shape, dtype=bool)
    for roi in trabecular_rois.values():
        union |= roi
    if union.any():
        # distance to metal, computed in the ROIs' bounding box grown by the search radius
        idx = np.nonzero(union)
        grow = [int(np.ceil(METAL_NEAR_MM / s)) for s in ct.spacing_mm]
        box = tuple(slice(max(0, int(ix.min()) - g), int(ix.max()) + g + 1) for ix, g in zip(idx, grow, strict=True))
        if metal[box].any():
            dist = ndi.distance_transform_edt(~metal[box], sampling=ct.spacing_mm)
            near = [lvl for lvl, roi in trabecular_rois.items()
                    if roi[box].any() and dist[roi[box]].min() <= METAL_NEAR_MM]
    return near


def metal_flags(near: list[str] | None) -> list[dict[str, str]]:
    """Flags from :func:`metal_near_levels`."""
    if near is None:
        return []
    if near:
        return [flag("metal_near_roi", "warning",
                     f"metal (> {METAL_HU:.0f} HU) within {METAL_NEAR_MM:.0f} mm of the ROI of {', '.join(near)}: "
                     "streak artefacts may bias HU; these levels are left out of the summary")]
    return [flag("metal_in_scan", "info", f"metal (> {METAL_HU:.0f} HU) in the scan, away from the spine ROIs")]


def slice_thickness_mm(ct: Volume) -> float:
    """The CT's slice thickness: DICOM SliceThickness (metadata ``slice_thickness_mm``) when known and
    positive, else the slice spacing."""
    try:
        value = float(ct.metadata.get("slice_thickness_mm"))
    except (TypeError, ValueError):
        value = 0.0
    return value if np.isfinite(value) and value > 0 else float(ct.spacing_mm[0])


def _with_bias(item: dict[str, str], bias_mg_cm3: float) -> dict[str, Any]:
    return {**item, "expected_bias_mg_cm3": round(float(bias_mg_cm3), 1)}


def slice_thickness_flags(ct: Volume, erosion_radius_mm: float) -> list[dict[str, Any]]:
    """Thick or widely spaced slices (the larger of the two counts): a warning with the measured bias up to
    :data:`SLICE_THICKNESS_WITHHOLD_MM`, ``slice_too_thick`` (summary withheld) beyond it. The ROIs keep thick
    slabs clear of the endplates (spine.z_clearance_mm), which is what makes up to 8 mm usable;
    ``erosion_radius_mm`` (the cortex removal used) is named in the message."""
    thickness, spacing = slice_thickness_mm(ct), float(ct.spacing_mm[0])
    effective = max(thickness, spacing)
    what = f"slices {thickness:g} mm thick, {spacing:g} mm apart"
    if effective <= SLICE_THICKNESS_WARN_MM + 1e-6:
        return []
    if effective > SLICE_THICKNESS_WITHHOLD_MM + 1e-6:
        return [_with_bias(flag("slice_too_thick", "warning",
                                f"{what}: a vertebral body spans only two or three slices, the ROI one or none; "
                                f"expected vBMD bias +{TOO_THICK_SLICE_BIAS_MG_CM3:.0f} mg/cm3 (digital patients, "
                                "10 mm), above the stated SD: vBMD and category withheld; use slices <= 8 mm"),
                           TOO_THICK_SLICE_BIAS_MG_CM3)]
    low, high = THICK_SLICE_BIAS_RANGE_MG_CM3
    return [_with_bias(flag("slice_thick", "warning",
                            f"{what}: the ROI keeps {max(erosion_radius_mm, effective):.1f} mm from the endplates; "
                            f"expected vBMD bias +{THICK_SLICE_BIAS_MG_CM3:.0f} mg/cm3 ({low:+.0f} to {high:+.0f} "
                            "measured up to 8 mm), within the stated SD"), THICK_SLICE_BIAS_MG_CM3)]


def muscle_reference_flags(source: str | None, method: str | None) -> list[dict[str, Any]]:
    """The muscle ROI is not psoas (``source`` from :func:`rois.muscle_source`): a warning stating the
    expected bias (the method's registered ``paraspinal_bias_mg_cm3``), blocking the category when that bias
    exceeds the stated SD (:data:`PARASPINAL_WITHHOLD_ABOVE_MG_CM3`)."""
    if source is None or source == "psoas":
        return []
    what = f"muscle reference is {source} muscle, not psoas (psoas absent or too small here)"
    registered = CALIBRATIONS.get(method or "")
    if registered is None or registered.paraspinal_bias_mg_cm3 is None:
        return [flag("muscle_not_psoas_unused", "info", f"{what}; the {method} calibration does not use it")]
    bias, (mean, low, high) = registered.paraspinal_bias_mg_cm3
    measured = (f"expected vBMD bias {bias:+.0f} mg/cm3 (measured with paraspinal muscle: a real CT; digital "
                f"patients {mean:+.0f}, {low:+.0f} to {high:+.0f})")
    if abs(bias) > PARASPINAL_WITHHOLD_ABOVE_MG_CM3:
        return [_with_bias(flag("muscle_not_psoas", "warning",
                                f"{what}: it holds more fat than the psoas the line assumes; {measured}, above the "
                                "stated SD: category withheld"), bias)]
    return [_with_bias(flag("muscle_not_psoas_weighted", "info",
                            f"{what}; {method} weights the muscle least: {measured}"), bias)]
