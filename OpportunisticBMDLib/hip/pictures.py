"""DXA-like hip report pictures (PNG, matplotlib Agg): the projection with the Hologic-style regions
and the numbers table, and the reference curve (aBMD vs age with the WHO T-score bands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import tscores
from .analysis import HipPicture
from .pad_anchor import PAD_METHODS

REGION_COLOURS = {"neck": "#ff3b30", "trochanter": "#34c759", "intertrochanter": "#0a84ff", "total_hip": "#ffd60a"}
REGION_TITLES = {"neck": "Neck", "trochanter": "Troch", "intertrochanter": "Inter", "total_hip": "Total"}
AGE_RANGE = (20, 90)


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, fmt)


def draw_projection(ax, pic: HipPicture) -> None:
    """The projection (aBMD image) with its regions on ``ax`` (the hip report and the PDF report draw it)."""
    proj, reg = pic.projection, pic.regions
    ug, vg = proj.uv_grid()
    extent = (ug[0, 0] - proj.pixel_mm / 2, ug[0, -1] + proj.pixel_mm / 2, vg[-1, 0] - proj.pixel_mm / 2,
              vg[0, 0] + proj.pixel_mm / 2)
    img = proj.abmd_g_cm2
    vmax = float(np.percentile(img[proj.footprint], 99.5)) if proj.footprint.any() else 1.0
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=max(vmax, 1e-3), extent=extent, interpolation="bilinear")
    for name in ("total_hip", "trochanter", "intertrochanter", "neck"):
        region = reg.masks[name]
        if pic.results.get(name) is None:
            continue
        shown = region & proj.footprint
        if shown.any():
            ax.contour(ug, vg, shown.astype(float), [0.5], colors=REGION_COLOURS[name],
                       linewidths=1.6 if name in ("neck", "total_hip") else 1.0)
    corners = np.vstack([reg.neck_box_corners_uv, reg.neck_box_corners_uv[:1]])
    ax.plot(corners[:, 0], corners[:, 1], color=REGION_COLOURS["neck"], lw=0.8, ls="--")
    axis_pts = np.array([np.zeros(2), reg.neck_axis_2d * (reg.neck_t_mm + 25.0)])
    ax.plot(axis_pts[:, 0], axis_pts[:, 1], color="#ff9f0a", lw=0.8, ls=":")
    if pic.results.get("total_hip") is not None:
        ax.plot(reg.troch_line_uv[:, 0], reg.troch_line_uv[:, 1], color="#34c759", lw=0.8, ls=":")
    ax.plot([0], [0], "+", color="#ff9f0a", ms=8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_facecolor("black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{pic.side.capitalize()} hip  (CT projection, {proj.pixel_mm:g} mm pixels)", fontsize=10)
    # scale bar: 10 mm
    x0, y0 = extent[0] + 4, extent[2] + 4
    ax.plot([x0, x0 + 10], [y0, y0], color="white", lw=2)
    ax.text(x0 + 5, y0 + 1.5, "10 mm", color="white", ha="center", fontsize=7)


def _draw_table(ax, pic: HipPicture) -> None:
    ax.axis("off")
    rows = []
    for name in ("neck", "trochanter", "intertrochanter", "total_hip"):
        r = pic.results.get(name)
        if r is None:
            rows.append([REGION_TITLES[name], "-", "-", "-", "-"])
            continue
        rows.append([REGION_TITLES[name], _fmt(r["area_cm2"], ".2f"), _fmt(r["bmc_g"], ".2f"),
                     _fmt(r["abmd_g_cm2"], ".3f"), _fmt(r.get("t_score"), "+.1f")])
    table = ax.table(cellText=rows, colLabels=["Region", "Area (cm²)", "BMC (g)", "BMD (g/cm²)", "T-score"],
                     loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1.05, 1.6)
    for col in range(5):
        table[0, col].set_facecolor("#e5e5ea")
    for i, name in enumerate(("neck", "trochanter", "intertrochanter", "total_hip"), start=1):
        table[i, 0].set_text_props(color=REGION_COLOURS[name] if name != "total_hip" else "#b38f00", weight="bold")
    cat = pic.results.get("category")
    lines = [
        f"WHO category (lowest of neck / total hip T): {cat or 'not available'}",
        f"Neck-shaft angle {_fmt(pic.results.get('neck_shaft_angle_deg'), '.0f')}°, "
        f"neck anteversion removed {_fmt(pic.results.get('neck_axis_angle_deg'), '.0f')}°",
        f"Calibration: {pic.results.get('calibration_method') or '-'}; aBMD in g/cm² HA (Hologic scale assumed)",
        "T-score reference: NHANES III White female 20-29 y",
        "(Looker et al. 1998), as the ISCD recommends.",
        _z_line(pic.results),
        _calibration_line(pic.results),
    ]
    for q in pic.results.get("qc", []):
        lines.append(f"QC: {q['code']}")
    ax.text(0.0, 0.38, "\n".join(lines), fontsize=7.5, va="top", ha="left", transform=ax.transAxes, family="monospace")


def _z_line(results: dict) -> str:
    pairs = (("neck", "neck"), ("total_hip", "total"))
    zs = [f"{title} {z:+.1f}" for name, title in pairs if (z := (results.get(name) or {}).get("z_score")) is not None]
    if zs:
        return "Z-score (age/sex-matched): " + ", ".join(zs)
    return "Z-score: not reported (" + ("age/sex unknown" if results.get("patient_age") is None or
                                        results.get("patient_sex") is None else "no matching reference row") + ")"


def _calibration_line(results: dict) -> str:
    cal = results.get("calibration") or {}
    shift = cal.get("hu_shift_applied") or 0.0
    source = "pad" if cal.get("method") in PAD_METHODS else "spine"
    line = f"Hip calibration: {source} line shifted {shift:+.1f} HU (local muscle)" if shift else \
        f"Hip calibration: {source} line unchanged"
    sds = [f"+-{sd:.2f} {title}" for name, title in (("neck", "neck"), ("total_hip", "total"))
           if (sd := (results.get(name) or {}).get("t_score_calibration_sd")) is not None]
    if sds:
        unknown = [what for what, assumed in (
            ("psoas fat", (cal.get("pad_anchor") or {}).get("psoas_fat_source") != "user"),
            ("marrow fat", bool((cal.get("marrow_fat") or {}).get("sd_fraction")))) if assumed]
        line += f"\nCalibration 1 SD{' (' + ', '.join(unknown) + ' unknown)' if unknown else ''}: T {', '.join(sds)}"
    return line


def _draw_reference_curve(ax, pic: HipPicture, region: str) -> None:
    lo_age, hi_age = AGE_RANGE
    ymin = tscores.abmd_at_t(-5.0, region)
    ymax = tscores.abmd_at_t(2.5, region)
    t_n = tscores.abmd_at_t(tscores.OSTEOPENIA_T, region)
    t_p = tscores.abmd_at_t(tscores.OSTEOPOROSIS_T, region)
    ax.axhspan(t_n, ymax, color="#34c759", alpha=0.35, lw=0)
    ax.axhspan(t_p, t_n, color="#ffd60a", alpha=0.45, lw=0)
    ax.axhspan(ymin, t_p, color="#ff3b30", alpha=0.35, lw=0)
    mean = tscores.abmd_at_t(0.0, region)
    ax.axhline(mean, color="k", lw=1.0, ls="--")
    ax.text(lo_age + 1, mean + 0.005, "young-adult mean (T = 0)", fontsize=7, va="bottom")
    sec = ax.secondary_yaxis("right", functions=(lambda y: (y - mean) / tscores.NHANES3_WHITE_FEMALE_YOUNG[region][1],
                                                 lambda t: mean + t * tscores.NHANES3_WHITE_FEMALE_YOUNG[region][1]))
    sec.set_ylabel("T-score", fontsize=8)
    r = pic.results.get(region)
    if r is not None and r.get("abmd_g_cm2") is not None:
        if pic.patient_age is not None:
            age = float(np.clip(pic.patient_age, lo_age, hi_age))
            sd = r.get("abmd_calibration_sd_g_cm2")
            if sd is not None:  # the calibration's 1 SD (phantomless: the patient's psoas composition), beside
                # the marker so that it stays visible
                ax.errorbar([age - 2.5], [r["abmd_g_cm2"]], yerr=[[sd], [sd]], color="black", capsize=3, lw=1.2)
                ax.text(age - 3.5, r["abmd_g_cm2"], "±1 SD", fontsize=6, ha="right", va="center")
            ax.plot([age], [r["abmd_g_cm2"]], "s", color="black", ms=8, mfc="white", mew=2)
            ax.annotate(f"{r['abmd_g_cm2']:.3f}\nT {r['t_score']:+.1f}", (age, r["abmd_g_cm2"]),
                        xytext=(8, 0), textcoords="offset points", fontsize=8, va="center")
        else:
            ax.axhline(r["abmd_g_cm2"], color="black", lw=1.5)
            ax.text(hi_age - 1, r["abmd_g_cm2"] + 0.005, f"patient {r['abmd_g_cm2']:.3f} (T {r['t_score']:+.1f}); "
                    "age unknown", fontsize=7, ha="right", va="bottom")
    ax.set_xlim(lo_age, hi_age)
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel("Age (years)", fontsize=8)
    ax.set_ylabel(f"{REGION_TITLES[region]} BMD (g/cm²)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{'Femoral neck' if region == 'neck' else 'Total hip'}: reference (WHO bands)", fontsize=9)
    ax.text(lo_age + 1, ymin + 0.01, "normal ≥ -1 | osteopenia | osteoporosis ≤ -2.5", fontsize=6.5, va="bottom")


def hip_report_figure(pic: HipPicture):
    """A matplotlib Figure laid out like a DXA hip report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 7.5), dpi=110)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.0, 1.15], height_ratios=[1.0, 1.0], wspace=0.25, hspace=0.35)
    draw_projection(fig.add_subplot(grid[:, 0]), pic)
    _draw_table(fig.add_subplot(grid[0, 1]), pic)
    region = "total_hip" if pic.results.get("total_hip") is not None else "neck"
    _draw_reference_curve(fig.add_subplot(grid[1, 1]), pic, region)
    age = f"{pic.patient_age:.0f} y" if pic.patient_age is not None else "age unknown"
    sex = pic.patient_sex or "sex unknown"
    fig.suptitle(f"OpportunisticBMD — CT-based DXA-like hip report ({pic.side}; {age}, {sex})", fontsize=12)
    return fig


def save_hip_pictures(pictures: dict[str, HipPicture], out_dir: str | Path) -> dict[str, Path]:
    """Write ``hip_<side>.png`` per measured hip (any keys; values that are not :class:`HipPicture`
    are skipped); returns ``{"hip_<side>_png": path}``."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for pic in pictures.values():
        if not isinstance(pic, HipPicture):
            continue
        fig = hip_report_figure(pic)
        path = out / f"hip_{pic.side}.png"
        fig.savefig(path)
        plt.close(fig)
        written[f"hip_{pic.side}_png"] = path
    return written
