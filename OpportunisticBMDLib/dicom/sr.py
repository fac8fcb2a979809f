"""The Measurement Report (DICOM SR, TID 1500) of an analysis: exactly the numbers of results.json.

One measurement group (TID 1411, volumetric ROI) per vertebral level with its vBMD (UCUM ``mg/cm3``), mean
trabecular HU (``[hnsf'U]``) and ROI volume (``mm3``), referencing the level's trabecular segment of our
SEG; one per hip region (aBMD ``g/cm2``, T- and Z-score) referencing its region segment, with an
"unreliable: <reason>" comment when the QC calls that region's value unreliable; the muscle and fat
ROIs with their HU; and groups without an ROI (TID 1501) for the spine summary with its ACR category, each
hip's WHO category, the calibration line, the analysis status and the QC findings (text items).

A category appears only when results.json holds one: when it is withheld, or nothing is measurable, the
group says so and why (``status_reasons``, ``withheld_note``, ``category_withheld_reasons``) instead.
Concepts with no standard code (vBMD, CT-derived aBMD, T-score, the calibration line) use the private
coding scheme ``99OBMD``, declared in the SR's Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .. import __version__
from ..hip.reliability import unreliable_regions
from ..labels import VERTEBRA_LEVELS
from ..report.wording import join_reasons
from .seg import HIP_REGIONS, SIDES, VERTEBRA_CODES

SCHEME = "99OBMD"
CODING_SCHEME = hd.coding_schemes.CodingSchemeIdentificationItem(
    designator=SCHEME, name="OpportunisticBMD measurement concepts", responsible_organization="OpportunisticBMD")
VBMD = Code("vBMD", SCHEME, "Volumetric bone mineral density (trabecular, HA equivalent)")
ABMD = Code("aBMD", SCHEME, "Areal bone mineral density (CT-derived, DXA-like)")
T_SCORE = Code("T-score", SCHEME, "T-score")
Z_SCORE = Code("Z-score", SCHEME, "Z-score")
CATEGORY = Code("category", SCHEME, "Bone density category")
CALIBRATION_SLOPE = Code("cal-slope", SCHEME, "Calibration slope (vBMD per HU)")
CALIBRATION_INTERCEPT = Code("cal-intercept", SCHEME, "Calibration intercept (vBMD at 0 HU)")
STATUS = Code("status", SCHEME, "Analysis status")
MEAN_HU = codes.DCM.AttenuationCoefficient  # 112031, with derivation Mean (SCT 373098007)
VOLUME = codes.SCT.Volume  # 118565006
COMMENT = codes.DCM.Comment  # 121106
PROCEDURE = codes.DCM.BoneMineralDensitometry
UNIT_MG_CM3 = Code("mg/cm3", "UCUM", "milligram per cubic centimeter")
UNIT_G_CM2 = Code("g/cm2", "UCUM", "gram per square centimeter")
UNIT_HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
UNIT_MM3 = Code("mm3", "UCUM", "cubic millimeter")
UNIT_SCORE = Code("{SD}", "UCUM", "standard deviations")
UNIT_SLOPE = Code("mg/cm3/[hnsf'U]", "UCUM", "milligram per cubic centimeter per Hounsfield unit")
CATEGORY_CODES = {  # SNOMED CT findings for the ACR (spine) and WHO (hip) categories
    "normal": Code("17621005", "SCT", "Normal"),
    "osteopenia": Code("312894000", "SCT", "Osteopenia"),
    "osteoporosis": Code("64859006", "SCT", "Osteoporosis"),
}
SIDE_CODES = {"left": codes.SCT.Left, "right": codes.SCT.Right}


def _measurement(name: Code, value: Any, unit: Code, derivation: Code | None = None) -> list[hd.sr.Measurement]:
    """A measurement, or none when results.json holds null."""
    if value is None:
        return []
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)]


def _add_text(group: hd.sr.Template, lines: Sequence[str]) -> None:
    """Free-text comments (TID 1501 allows TEXT items in a measurement group) under the group's container."""
    container = group[0]
    for line in lines:
        if line:
            container.ContentSequence.append(hd.sr.TextContentItem(
                name=COMMENT, value=str(line)[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))


def _category(value: str | None) -> list[hd.sr.QualitativeEvaluation]:
    return [hd.sr.QualitativeEvaluation(CATEGORY, CATEGORY_CODES[value])] if value in CATEGORY_CODES else []


def _segment_ref(seg: Dataset, numbers: dict[str, int], name: str) -> hd.sr.ReferencedSegment | None:
    return hd.sr.ReferencedSegment.from_segmentation(seg, numbers[name]) if name in numbers else None


def _roi_group(identifier: str, seg: Dataset, numbers: dict[str, int], segment: str, finding_type: Code,
               measurements: list[hd.sr.Measurement], site: hd.sr.FindingSite | None = None,
               text: Sequence[str] = ()) -> hd.sr.Template:
    reference = _segment_ref(seg, numbers, segment)
    if reference is None or not measurements:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier),
            finding_type=finding_type, finding_sites=[site] if site else None, measurements=measurements or None)
    else:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier),
            referenced_segment=reference, finding_type=finding_type, finding_sites=[site] if site else None,
            measurements=measurements)
    _add_text(group, text)
    return group


def level_groups(results: dict, seg: Dataset, numbers: dict[str, int]) -> list[hd.sr.Template]:
    groups = []
    levels = results["spine"]["levels"]
    for level in VERTEBRA_LEVELS:
        values = levels.get(level)
        if values is None:
            continue
        measurements = (_measurement(VBMD, values.get("vbmd_mg_cm3"), UNIT_MG_CM3, codes.SCT.Mean)
                        + _measurement(MEAN_HU, values.get("trabecular_hu_mean"), UNIT_HU, codes.SCT.Mean)
                        + _measurement(VOLUME, values.get("roi_volume_mm3"), UNIT_MM3))
        reasons = (values.get("invalid_reasons") or []) + (values.get("exclusion_reasons") or [])
        text = ["valid" if values.get("valid") else "not valid: " + ", ".join(dict.fromkeys(reasons))]
        groups.append(_roi_group(f"{level} trabecular ROI", seg, numbers, f"trabecular_{level}",
                                 VERTEBRA_CODES[level], measurements, text=text))
    return groups


def summary_group(results: dict) -> hd.sr.Template:
    """The spine summary: its vBMD and HU, its ACR category only when results.json gives one."""
    summary = results["spine"]["summary"]
    used = summary.get("levels_used") or []
    measurements = (_measurement(VBMD, summary.get("vbmd_mg_cm3"), UNIT_MG_CM3, codes.SCT.Mean)
                    + _measurement(MEAN_HU, summary.get("trabecular_hu_mean"), UNIT_HU, codes.SCT.Mean))
    identifier = " ".join(["spine summary", "-".join(used)]).strip()
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier),
        finding_type=codes.SCT.StructureOfVertebralColumn, measurements=measurements or None,
        qualitative_evaluations=_category(summary.get("category")) or None)
    text = [f"levels used: {', '.join(used) or 'none'}", summary.get("note") or ""]
    if summary.get("category"):
        text.append(f"category system: {summary.get('category_system')}")
        if summary.get("vbmd_calibration_sd_mg_cm3") is not None:
            text.append(f"vBMD calibration SD (1 SD): {summary['vbmd_calibration_sd_mg_cm3']:.2f} mg/cm3")
    else:
        text.append("no category: " + (summary.get("withheld_note") or summary.get("note") or "not measurable"))
    _add_text(group, text)
    return group


def hip_groups(results: dict, seg: Dataset, numbers: dict[str, int]) -> list[hd.sr.Template]:
    groups = []
    for side in SIDES:
        block = (results.get("hip") or {}).get(side)
        if not isinstance(block, dict):
            continue
        site = hd.sr.FindingSite(codes.SCT.ProximalFemur, laterality=SIDE_CODES[side])
        unreliable = unreliable_regions(side, block)  # the QC's word, a comment in the region's own group
        for region in HIP_REGIONS:
            values = block.get(region)
            if not isinstance(values, dict):
                continue
            measurements = (_measurement(ABMD, values.get("abmd_g_cm2"), UNIT_G_CM2)
                            + _measurement(T_SCORE, values.get("t_score"), UNIT_SCORE)
                            + _measurement(Z_SCORE, values.get("z_score"), UNIT_SCORE))
            text = [f"unreliable: {'; '.join(unreliable[region])}"] if region in unreliable else []
            groups.append(_roi_group(f"{side} hip {region.replace('_', ' ')}", seg, numbers,
                                     f"hip_{region}_roi_{side}", codes.SCT.ProximalFemur, measurements, site,
                                     text=text))
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{side} hip category"),
            finding_type=codes.SCT.ProximalFemur, finding_sites=[site],
            qualitative_evaluations=_category(block.get("category")) or None)
        text = [f"T-score reference: {block['reference']}"] if block.get("reference") else []
        if not block.get("category"):
            reasons = join_reasons([str(r.get("message", "")) for r in block.get("category_withheld_reasons") or []],
                                   f"{side} hip: ")
            text.append("no category: " + (reasons or block.get("excluded_reason") or "not measurable"))
        if block.get("z_score_note"):
            text.append(block["z_score_note"])
        _add_text(group, text)
        groups.append(group)
    return groups


def calibration_groups(results: dict, seg: Dataset, numbers: dict[str, int]) -> list[hd.sr.Template]:
    cal = results.get("calibration") or {}
    method = str(cal.get("method") or "none")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="calibration"),
        method=Code(method, SCHEME, f"calibration method {method}"),
        measurements=(_measurement(CALIBRATION_SLOPE, cal.get("slope"), UNIT_SLOPE)
                      + _measurement(CALIBRATION_INTERCEPT, cal.get("intercept"), UNIT_MG_CM3)) or None)
    text = [f"calibration: {method}"]
    if cal.get("slope") is not None and cal.get("intercept") is not None:
        text.append(f"vBMD = {cal['intercept']:.4f} + {cal['slope']:.6f} x HU (mg/cm3)")
    details = cal.get("details") or {}
    if details.get("auto_reason"):
        text.append(f"chosen automatically: {details['auto_reason']}")
    _add_text(group, text)
    groups = [group]
    for name, key, label, finding in (("muscle_roi", "muscle_hu", "muscle", codes.SCT.SkeletalMuscle),
                                      ("fat_roi", "fat_hu", "fat", codes.SCT.AdiposeTissue)):
        if cal.get(key) is None:
            continue
        density = cal.get(f"{label}_density_mg_cm3")
        text = [f"equivalent density {density:.2f} mg/cm3"] if density is not None else []
        groups.append(_roi_group(f"{label} reference ROI", seg, numbers, name, finding,
                                 _measurement(MEAN_HU, cal[key], UNIT_HU, codes.SCT.Mean), text=text))
    return groups


def status_group(results: dict) -> hd.sr.Template:
    """The analysis status and every QC finding, as text."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="status and quality control"),
        finding_type=codes.DCM.QualityControl)
    lines = [f"status: {results.get('status')}"]
    lines += [f"status reason [{r.get('code')}]: {r.get('message')}" for r in results.get("status_reasons") or []]
    lines += [f"qc {q.get('severity')} [{q.get('code')}]: {q.get('message')}" for q in results.get("qc") or []]
    lines.append("not a medical device: research use only")
    _add_text(group, lines)
    return group


def build_report(results: dict, seg: Dataset, numbers: dict[str, int], sources: Sequence[Dataset], *,
                 series_uid: str, sop_uid: str, series_number: int) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of ``results`` (results.json), referencing ``seg`` segments by ``numbers``."""
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="OpportunisticBMD", manufacturer_name="OpportunisticBMD",
            model_name="obmd analyze"))
    groups = (level_groups(results, seg, numbers) + [summary_group(results)] + hip_groups(results, seg, numbers)
              + calibration_groups(results, seg, numbers) + [status_group(results)])
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE, imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, *sources], content=report[0], series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer="OpportunisticBMD", is_complete=True,
        series_description="OBMD bone density measurements", coding_schemes=[CODING_SCHEME],
        software_versions=__version__, manufacturer_model_name="obmd analyze", device_serial_number="0")
