"""Layout of ``report.pdf`` (reportlab): page 1 the spine, page 2 the hip (only when the results have one).

Everything written is vector text (searchable, copied by ``pdftotext``); only the CT pictures are images.
Numbers and words come from results.json as validity.py left them: a value or a category it withheld is
shown as withheld, with its reasons; nothing is decided here. Meaning never rests on colour alone (grey
print): the summary is boxed and bold, invalid levels say so in words.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..hip.reliability import unreliable_regions
from ..validity import category_text
from .wording import join_reasons, muscle_name

PAGE_SIZES_MM = {"A4": (210.0, 297.0), "Letter": (215.9, 279.4)}
MARGIN_MM = 14.0
FOOTER_MM = 21.0  # room kept at the bottom of every page for the footer
FONT, FONT_BOLD = "DejaVuSans", "DejaVuSans-Bold"  # matplotlib's fonts: every glyph we print (³, ±, −, ≥)
NOT_RECORDED = "not recorded"
MAX_QC_LINES = 8  # page 1 lists the first warnings; results.json holds them all (design choice: one page)
HIP_REGIONS = (("neck", "Femoral neck"), ("trochanter", "Trochanter"), ("intertrochanter", "Intertrochanter"),
               ("total_hip", "Total hip"))
DISCLAIMER = "Not a medical device; research use only."


@dataclass
class ReportOptions:
    """How the PDF is laid out."""

    page_size: str = "A4"  # "A4" or "Letter"

    def __post_init__(self) -> None:
        if self.page_size not in PAGE_SIZES_MM:
            raise ValueError(f"page size {self.page_size!r}: one of {', '.join(PAGE_SIZES_MM)}")


@dataclass
class ReportFigures:
    """The pictures (PNG bytes; None: not available) the layout places."""

    sagittal: bytes | None = None
    axial: bytes | None = None
    axial_level: str | None = None
    hips: dict[str, bytes] = field(default_factory=dict)  # side -> projection picture


# ----------------------------------------------------------------------------------------- formatting
def _num(value: Any, decimals: int, signed: bool = False) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return format(number, f"{'+' if signed else ''}.{decimals}f") if number == number else None


def _or(text: str | None, missing: str = NOT_RECORDED) -> str:
    return text if text not in (None, "") else missing


def _words(code: str) -> str:
    return str(code).replace("_", " ")


def _tidy(text: str) -> str:
    """A message joined from sentences without doubled punctuation ("reported.; too" -> "reported; too")."""
    return text.replace(".;", ";").replace("..", ".")


def _unnested(source: str) -> str:
    """'default (age unknown)' -> 'default: age unknown', to sit inside the report's own brackets."""
    return re.sub(r"^(.*?)\s*\((.*)\)$", r"\1: \2", source.strip())


def _levels_label(levels: list[str]) -> str:
    return "–".join([levels[0], levels[-1]]) if len(levels) > 1 else (levels[0] if levels else "")


# ----------------------------------------------------------------------------------------- reportlab parts
def _setup_reportlab() -> None:
    """Fonts, and binary streams: reportlab's default ASCII85 text encoding of images runs in pure Python
    without its C accelerator (0.3 s of a 0.5 s report on the shared CT); a binary PDF is as valid. Both are
    the same for every report of the process, so setting them once is safe from any thread."""
    import matplotlib
    from reportlab import rl_config
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    rl_config.useA85 = 0

    registered = set(pdfmetrics.getRegisteredFontNames())
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name in (FONT, FONT_BOLD):
        if name not in registered:
            pdfmetrics.registerFont(TTFont(name, str(fonts / f"{name}.ttf")))
    if "DejaVuSansFamily" not in registered:
        pdfmetrics.registerFontFamily("DejaVuSansFamily", normal=FONT, bold=FONT_BOLD, italic=FONT,
                                      boldItalic=FONT_BOLD)
        pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT, boldItalic=FONT_BOLD)


def _styles() -> dict[str, Any]:
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("base", fontName=FONT, fontSize=8.5, leading=10.5)
    return {
        "base": base,
        "title": ParagraphStyle("title", parent=base, fontName=FONT_BOLD, fontSize=13.5, leading=16, spaceAfter=1),
        "subtitle": ParagraphStyle("subtitle", parent=base, fontSize=7.5, leading=9, textColor="#333333"),
        "h2": ParagraphStyle("h2", parent=base, fontName=FONT_BOLD, fontSize=10, leading=12.5, spaceBefore=5,
                             spaceAfter=2),
        "big": ParagraphStyle("big", parent=base, fontSize=12, leading=15),
        "small": ParagraphStyle("small", parent=base, fontSize=7.2, leading=8.8),
        "small_apart": ParagraphStyle("small_apart", parent=base, fontSize=7.2, leading=8.8, spaceBefore=3),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.8, leading=9.3),
        "cellb": ParagraphStyle("cellb", parent=base, fontName=FONT_BOLD, fontSize=7.8, leading=9.3),
        "footer": ParagraphStyle("footer", parent=base, fontSize=6.4, leading=7.7, textColor="#222222"),
    }


def _p(text: str, style: Any) -> Any:
    from reportlab.platypus import Paragraph

    return Paragraph(text, style)


def _table(rows: list[list[Any]], widths: list[float], header: bool = True, grid: bool = True) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, hAlign="LEFT")
    style = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1.5),
             ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5), ("LEFTPADDING", (0, 0), (-1, -1), 3),
             ("RIGHTPADDING", (0, 0), (-1, -1), 3)]
    if grid:
        style += [("LINEBELOW", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
                  ("BOX", (0, 0), (-1, -1), 0.6, colors.black)]
    if header:
        style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dddddd")),
                  ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black)]
    table.setStyle(TableStyle(style))
    return table


def _image(png: bytes | None, width_mm: float, height_mm: float, missing: str, styles: dict[str, Any]) -> Any:
    from reportlab.lib.units import mm
    from reportlab.platypus import Image

    if png is None:
        return _p(f"<i>{escape(missing)}</i>", styles["small"])
    return Image(io.BytesIO(png), width=width_mm * mm, height=height_mm * mm, kind="proportional")


# ----------------------------------------------------------------------------------------- page 1: spine
def used_age_sex_text(results: dict[str, Any]) -> tuple[str, str]:
    """The age and the sex the analysis used (results.json ``options``: the header's unless given on the
    command line, in a batch manifest or a front end's panel) and where each came from; the header's value
    too when it differs (the header is ``input.identification``)."""
    ident = (results.get("input") or {}).get("identification") or {}
    options = results.get("options") or {}
    used_age, header_age = _num(options.get("patient_age"), 0), _num(ident.get("patient_age_years"), 0)
    header_age_text = f"{header_age} y" if header_age is not None else ident.get("patient_age")
    if used_age is None:
        age = f"unknown (header {header_age_text}: not used)" if header_age_text else NOT_RECORDED
    elif used_age == header_age:
        age = f"{used_age} y (from the header)"
    else:
        age = f"{used_age} y (given)" + (f"; header: {header_age_text}" if header_age_text else "")
    used_sex, header_sex = options.get("patient_sex"), ident.get("patient_sex")
    if not used_sex:
        sex = f"unknown (header {header_sex}: not used)" if header_sex else NOT_RECORDED
    elif used_sex == header_sex:
        sex = f"{used_sex} (from the header)"
    else:
        sex = f"{used_sex} (given)" + (f"; header: {header_sex}" if header_sex else "")
    return age, sex


def _identification(results: dict[str, Any], styles: dict[str, Any], width: float) -> list[Any]:
    ident = (results.get("input") or {}).get("identification") or {}
    age_text, sex_text = used_age_sex_text(results)
    scanner = " ".join(x for x in (ident.get("manufacturer"), ident.get("manufacturer_model_name")) if x) or None
    kvp = _num(ident.get("kvp"), 0)
    thickness = _num(ident.get("slice_thickness_mm"), 2)
    pairs = [
        ("Patient ID", _or(ident.get("patient_id")), "Study date", _or(ident.get("study_date"))),
        ("Age", age_text, "Scanner", _or(scanner)),
        ("Sex", sex_text, "Tube voltage", f"{kvp} kVp" if kvp is not None else NOT_RECORDED),
        ("Series", _or(ident.get("series_description")), "Slice thickness",
         f"{thickness.rstrip('0').rstrip('.')} mm" if thickness is not None else NOT_RECORDED),
    ]
    cell, bold = styles["cell"], styles["cellb"]
    rows = [[_p(escape(a), bold), _p(escape(b), cell), _p(escape(c), bold), _p(escape(d), cell)]
            for a, b, c, d in pairs]
    source = {"dicom": "DICOM header", "sidecar": "JSON sidecar beside the image",
              "volume node": "header fields of the Slicer volume"}.get(ident.get("source") or "",
                                                                       "none (the image file carries no header)")
    ct_path = (results.get("input") or {}).get("ct") or ""
    note = f"Identification from: {source}. Image: {Path(str(ct_path)).name or NOT_RECORDED}."
    return [_table(rows, [0.14 * width, 0.36 * width, 0.16 * width, 0.34 * width], header=False),
            _p(escape(note), styles["small"])]


def _summary(results: dict[str, Any], styles: dict[str, Any], width: float) -> list[Any]:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    summary = (results.get("spine") or {}).get("summary") or {}
    levels = _levels_label(summary.get("levels_used") or [])
    vbmd = _num(summary.get("vbmd_mg_cm3"), 1)
    sd = _num(summary.get("vbmd_calibration_sd_mg_cm3"), 1)
    hu = _num(summary.get("trabecular_hu_mean"), 1)
    lines = []
    if vbmd is not None:
        value = f"<b>{vbmd}</b>" + (f" ± {sd}" if sd is not None else "") + " mg/cm³"
        sd_note = " (± 1 SD from the calibration)" if sd is not None else " (the calibration states no ±)"
        lines.append(f"Trabecular vBMD, {escape(levels)}: {value}{escape(sd_note)}")
    elif hu is not None:
        lines.append(f"Trabecular HU, {escape(levels)}: <b>{hu} HU</b>; no vBMD")
    else:
        lines.append("Trabecular vBMD: <b>not measurable</b>")
    lines.append(f"ACR category: <b>{escape(category_text(summary))}</b>")
    body = [_p(line, styles["big"]) for line in lines]
    status = _words(results.get("status") or "unknown")
    messages = [str(r.get("message", "")) for r in results.get("status_reasons") or [] if isinstance(r, dict)]
    # each reason on its own line, without the status it would repeat ("not measurable: not measurable: ...")
    reasons = [_tidy(m[len(status) + 2:] if m.startswith(status + ": ") else m) for m in messages]
    if len(reasons) == 1:
        body.append(_p(f"<b>Status: {escape(status)}</b>: " + escape(reasons[0]), styles["cell"]))
    else:
        body.append(_p(f"<b>Status: {escape(status)}</b>" + (":<br/>" if reasons else "")
                       + "<br/>".join("• " + escape(r) for r in reasons), styles["cell"]))
    said = " ".join(messages)
    withheld = summary.get("withheld_note")
    if withheld and withheld not in said:
        body.append(_p("Withheld: " + escape(str(withheld)), styles["cell"]))
    note = str(summary.get("note") or "")
    note = "" if not note or note in said or (withheld and withheld in note) else note + ". "
    body.append(_p(escape(f"{note}Categories: {summary.get('category_system') or ''}."), styles["small_apart"]))
    box = Table([[body]], colWidths=[width])
    box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 1.4, colors.black), ("LEFTPADDING", (0, 0), (-1, -1), 6),
                             ("TOPPADDING", (0, 0), (-1, -1), 4), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
    return [box]


def _level_rows(results: dict[str, Any], styles: dict[str, Any]) -> list[list[Any]]:
    spine = results.get("spine") or {}
    used = set((spine.get("summary") or {}).get("levels_used") or [])
    cell = styles["cell"]
    rows: list[list[Any]] = [[_p(f"<b>{t}</b>", cell) for t in ("Level", "vBMD mg/cm³", "HU mean", "HU SD",
                                                                "ROI cm³", "Use / QC")]]
    for level, entry in (spine.get("levels") or {}).items():
        volume = entry.get("roi_volume_mm3")
        reasons = entry.get("invalid_reasons") or []
        if level in used:
            use = "<b>in the summary</b>"
        elif entry.get("valid"):
            use = "valid, not used (summary uses its preferred pair)"
        else:
            use = "not valid: " + escape(", ".join(_words(r) for r in reasons) or "no reason given")
        level_text = f"<b>{level}</b>" if level in used else level
        rows.append([_p(level_text, cell), _p(_or(_num(entry.get("vbmd_mg_cm3"), 1), "–"), cell),
                     _p(_or(_num(entry.get("trabecular_hu_mean"), 1), "–"), cell),
                     _p(_or(_num(entry.get("trabecular_hu_sd"), 1), "–"), cell),
                     _p(_or(_num(None if volume is None else float(volume) / 1000.0, 2), "–"), cell),
                     _p(use, cell)])
    return rows


def calibration_text(results: dict[str, Any]) -> str:
    """One line: the method, the line and the tissues (or rods) it stands on."""
    cal = results.get("calibration") or {}
    details = cal.get("details") or {}
    method = cal.get("method") or "unknown"
    if cal.get("slope") is None:
        return f"Calibration: {method}: none (HU only, no vBMD)."
    how = f" ({details.get('selected_by')}: {details.get('auto_reason')})" if details.get("auto_reason") else ""
    text = (f"Calibration: {method}{how}. vBMD = {_num(cal.get('intercept'), 2)} + {_num(cal.get('slope'), 4)} "
            "× HU (mg/cm³).")
    tissues = []
    muscle, fat = _num(cal.get("muscle_hu"), 1), _num(cal.get("fat_hu"), 1)
    muscle_d, fat_d = _num(cal.get("muscle_density_mg_cm3"), 1), _num(cal.get("fat_density_mg_cm3"), 1)
    if muscle is not None:
        source = _words(cal.get("muscle_roi_source") or "muscle")
        tissues.append(f"{source} {muscle} HU" + (f" = {muscle_d} mg/cm³" if muscle_d is not None else ""))
    if fat is not None:
        tissues.append(f"subcutaneous fat {fat} HU" + (f" = {fat_d} mg/cm³" if fat_d is not None else ""))
    if method == "inscan":
        tissues.insert(0, "rods of the calibration pad scanned with the patient")
    if tissues:
        text += " Tissues: " + "; ".join(tissues) + "."
    return text


def assumptions_text(results: dict[str, Any]) -> str:
    """What the calibration assumed (tube voltage, the psoas' and the marrow's fat)."""
    details = (results.get("calibration") or {}).get("details") or {}
    parts = []
    kvp = _num(details.get("kvp"), 0)
    if kvp is not None:
        parts.append(f"{kvp} kVp ({details.get('kvp_source') or 'header'})")
    psoas = _num(None if details.get("psoas_fat_fraction") is None else 100 * details["psoas_fat_fraction"], 1)
    if psoas is not None:
        source = str(details.get("psoas_fat_source") or "").split(" (")[0]
        parts.append(f"{muscle_name(results)} fat {psoas} %" + (f" ({source})" if source else ""))
    marrow = details.get("marrow_fat") or {}
    base = _num(None if marrow.get("base_fraction") is None else 100 * marrow["base_fraction"], 0)
    if base is not None:
        source = _unnested(str(marrow.get("source") or ""))
        parts.append(f"marrow fat {base} %" + (f" ({source})" if source else ""))
    return "Calibration assumptions: " + ("; ".join(parts) if parts else "none stated") + "."


def _qc_lines(results: dict[str, Any], styles: dict[str, Any], hip: bool) -> list[Any]:
    items = [q for q in results.get("qc") or [] if isinstance(q, dict) and q.get("severity") in ("warning", "error")
             and str(q.get("code", "")).startswith("hip_") == hip]
    if not items:
        return [_p("Quality checks: no warnings.", styles["small"])]
    shown = [f"• [{escape(str(q.get('code')))}] {escape(str(q.get('message')))}" for q in items[:MAX_QC_LINES]]
    if len(items) > MAX_QC_LINES:
        shown.append(f"… and {len(items) - MAX_QC_LINES} more in results.json")
    return [_p("<b>Quality checks (warnings)</b>", styles["cell"]), _p("<br/>".join(shown), styles["small"])]


def _spine_page(results: dict[str, Any], figures: ReportFigures, styles: dict[str, Any], width_mm: float) -> list:
    from reportlab.lib.units import mm
    from reportlab.platypus import Spacer

    width = width_mm * mm
    story: list[Any] = [_p("OpportunisticBMD — CT bone density report", styles["title"]),
                        _p(escape(f"Spine: trabecular volumetric BMD (hydroxyapatite). Report written "
                                  f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC."), styles["subtitle"]),
                        Spacer(1, 3 * mm)]
    story += _identification(results, styles, width)
    story.append(Spacer(1, 3 * mm))
    story += _summary(results, styles, width)
    story.append(Spacer(1, 3 * mm))
    half = (width_mm - 4.0) / 2.0
    pic_h = 0.95 * half * 1.18
    level = figures.axial_level or "L1"
    pictures = [[_image(figures.sagittal, half, pic_h, "no trabecular ROI to show", styles),
                 _image(figures.axial, half, pic_h, "no axial view", styles)],
                [_p("Sagittal: levels named; ROI outline bold = in the summary, thin = valid, dashed = not valid.",
                    styles["small"]),
                 _p(escape(f"Axial through {level}: trabecular ROI (solid), {muscle_name(results)} ROI (dashed), "
                           "fat ROI (dotted); patient's right on the left."), styles["small"])]]
    story.append(_table(pictures, [half * mm + 2 * mm, half * mm + 2 * mm], header=False, grid=False))
    story.append(Spacer(1, 2 * mm))
    story.append(_p("Per vertebra (trabecular ROI)", styles["h2"]))
    story.append(_table(_level_rows(results, styles),
                        [0.07 * width, 0.12 * width, 0.1 * width, 0.09 * width, 0.09 * width, 0.53 * width]))
    story.append(Spacer(1, 2 * mm))
    story.append(_p(escape(calibration_text(results)), styles["cell"]))
    story.append(Spacer(1, 1.5 * mm))
    story += _qc_lines(results, styles, hip=False)
    return story


# ----------------------------------------------------------------------------------------- page 2: hip
def _hip_side(side: str, block: dict[str, Any], png: bytes | None, styles: dict[str, Any], width_mm: float) -> list:
    from reportlab.lib.units import mm

    cell = styles["cell"]
    title = _p(f"<b>{side.capitalize()} hip</b>", styles["h2"])
    if block.get("excluded_reason"):
        return [title, _p(escape(f"Not measured: {block['excluded_reason']}."), cell)]
    rows: list[list[Any]] = [[_p(f"<b>{t}</b>", cell) for t in ("Region", "aBMD g/cm²", "T-score", "Z-score",
                                                                "Area cm²")]]
    unreliable = unreliable_regions(side, block)  # the QC's word on a region: marked beside its numbers
    spans = []
    for key, name in HIP_REGIONS:
        r = block.get(key)
        if not isinstance(r, dict):
            rows.append([_p(name, cell), _p("not reported", cell), _p("–", cell), _p("–", cell), _p("–", cell)])
            continue
        t = _num(r.get("t_score"), 1, signed=True)
        t_sd = _num(r.get("t_score_calibration_sd"), 1)
        mark = "<br/><b>unreliable</b>" if key in unreliable else ""
        rows.append([_p(name, cell), _p(_or(_num(r.get("abmd_g_cm2"), 3), "–") + mark, cell),
                     _p(_or(t, "–") + (f" ± {t_sd}" if t is not None and t_sd is not None else "") + mark, cell),
                     _p(_or(_num(r.get("z_score"), 1, signed=True), "not reported"), cell),
                     _p(_or(_num(r.get("area_cm2"), 2), "–"), cell)])
        if key in unreliable:
            spans.append(len(rows))
            rows.append([_p(f"↑ {escape(name)} <b>unreliable</b>: " + escape("; ".join(unreliable[key])),
                            styles["small"]), "", "", "", ""])
    table_w = width_mm * 0.56
    table = _table(rows, [0.27 * table_w * mm, 0.19 * table_w * mm, 0.2 * table_w * mm, 0.18 * table_w * mm,
                          0.16 * table_w * mm])
    if spans:
        from reportlab.platypus import TableStyle

        table.setStyle(TableStyle([("SPAN", (0, row), (-1, row)) for row in spans]))
    if block.get("category"):
        who = f"WHO category: <b>{escape(str(block['category']))}</b> (lowest of femoral neck and total hip T-score)"
    else:
        reasons = join_reasons([str(r.get("message", "")) for r in block.get("category_withheld_reasons") or []
                                if isinstance(r, dict)], f"{side} hip: ") or "no T-score."
        who = f"WHO category: <b>withheld</b>: {escape(reasons)}"
    notes = [who]
    z_note = str(block.get("z_score_note") or "")
    if z_note:
        notes.append(escape(z_note if z_note.lower().startswith("z-score") else "Z-score: " + z_note))
    if block.get("reference"):
        notes.append("T-score reference: " + escape(str(block["reference"])))
    angle = _num(block.get("neck_shaft_angle_deg"), 0)
    if angle is not None:
        notes.append(f"Neck-shaft angle {angle}°.")
    right = [table, _p("<br/>".join(notes), styles["small"])]
    pic_w = width_mm * 0.40
    picture = _image(png, pic_w, pic_w * 1.13, "no projection picture", styles)
    return [title, _table([[picture, right]], [pic_w * mm + 2 * mm, table_w * mm + 2 * mm], header=False, grid=False)]


def _hip_page(results: dict[str, Any], figures: ReportFigures, styles: dict[str, Any], width_mm: float) -> list:
    from reportlab.lib.units import mm
    from reportlab.platypus import Spacer

    story: list[Any] = [_p("OpportunisticBMD — CT bone density report", styles["title"]),
                        _p("Hip: CT-derived DXA-like areal BMD (CTXA-like projection, Hologic-style regions; g/cm² "
                           "hydroxyapatite). Regions on the pictures: neck (box, dashed), trochanter, "
                           "intertrochanter, total hip (outlines).", styles["subtitle"]), Spacer(1, 2 * mm)]
    for side in ("right", "left"):  # DXA reports name the right hip first
        block = (results.get("hip") or {}).get(side)
        if isinstance(block, dict):
            story += _hip_side(side, block, figures.hips.get(side), styles, width_mm)
            story.append(Spacer(1, 2 * mm))
    story += _qc_lines(results, styles, hip=True)
    return story


# ----------------------------------------------------------------------------------------- footer, document
def _model_text(results: dict[str, Any]) -> str:
    models = (results.get("software") or {}).get("models") or {}
    model = models.get("model") if isinstance(models.get("model"), dict) else models  # inference.segment's "model"
    if models:
        name = model.get("name") or "model"
        return f"segmentation: model {name} {model.get('version') or '(version not stated)'}"
    source = (results.get("input") or {}).get("labels_source") or "given"
    shipped = shipped_model()
    return f"segmentation: labels given ({source})" + (f"; shipped model {shipped} not used" if shipped else "")


def shipped_model() -> str | None:
    """``name version`` of the shipped segmentation model (Resources/Models/manifest.json), if installed."""
    from ..resources import models_dir

    try:
        manifest = json.loads((models_dir() / "manifest.json").read_text())
        entry = (manifest.get("models") or [])[0]
        return f"{entry['name']} {entry['version']}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def footer_text(results: dict[str, Any]) -> list[str]:
    software = results.get("software") or {}
    method = ("Method: trabecular vBMD in vertebral bodies eroded of their cortex, calibrated on the scan; "
              "ACR 2018 QCT categories on the mean of two valid vertebrae")
    if results.get("hip"):
        method += "; hip: CTXA-like projection, WHO categories on T-scores (NHANES III reference)"
    return [method + ".", assumptions_text(results),
            f"{software.get('name', 'OpportunisticBMD')} {software.get('version', '')}; {_model_text(results)}. "
            f"<b>{DISCLAIMER}</b>"]


def write_pdf(results: dict[str, Any], figures: ReportFigures, path: str | Path,
              options: ReportOptions | None = None) -> Path:
    """Write the report to ``path``: one page (spine), two with a hip."""
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepInFrame, PageBreak, Paragraph, SimpleDocTemplate

    options = options or ReportOptions()
    _setup_reportlab()
    styles = _styles()
    page_w, page_h = PAGE_SIZES_MM[options.page_size]
    width_mm = page_w - 2 * MARGIN_MM
    frame_h = (page_h - 2 * MARGIN_MM - FOOTER_MM) * mm
    has_hip = any(isinstance(b, dict) for b in (results.get("hip") or {}).values())
    pages = [_spine_page(results, figures, styles, width_mm)]
    if has_hip:
        pages.append(_hip_page(results, figures, styles, width_mm))
    story: list[Any] = []
    for number, content in enumerate(pages):
        if number:
            story.append(PageBreak())
        # shrink a crowded page rather than spill onto another: the page count is 1 + hip, always
        story.append(KeepInFrame(width_mm * mm, frame_h - 2 * mm, content, mode="shrink"))
    footer = footer_text(results)

    def draw_footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        y = MARGIN_MM * mm
        canvas.setLineWidth(0.5)
        canvas.line(MARGIN_MM * mm, y + (FOOTER_MM - 3) * mm, (page_w - MARGIN_MM) * mm, y + (FOOTER_MM - 3) * mm)
        text = "<br/>".join(escape(line) if not line.endswith("</b>") else line for line in footer[:-1])
        text += "<br/>" + footer[-1] + f"  Page {doc.page} of {len(pages)}."
        para = Paragraph(text, styles["footer"])
        _, h = para.wrap(width_mm * mm, FOOTER_MM * mm)
        para.drawOn(canvas, MARGIN_MM * mm, y + (FOOTER_MM - 4) * mm - h)
        canvas.restoreState()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=(page_w * mm, page_h * mm), leftMargin=MARGIN_MM * mm,
                            rightMargin=MARGIN_MM * mm, topMargin=MARGIN_MM * mm,
                            bottomMargin=(MARGIN_MM + FOOTER_MM) * mm, title="OpportunisticBMD report",
                            author=f"OpportunisticBMD {(results.get('software') or {}).get('version', '')}",
                            subject="CT bone density (research use only)")
    doc.build(story, onFirstPage=draw_footer, onLaterPages=draw_footer)
    return path
