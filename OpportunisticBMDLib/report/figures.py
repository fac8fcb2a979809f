"""The report's pictures (PNG bytes, matplotlib Agg without pyplot): a sagittal view of the spine with the
named levels and their trabecular ROIs, and an axial view through L1 with the trabecular, psoas and fat ROIs.

Meaning is carried by line style and text as well as colour, so that a grey print reads the same: ROIs of the
summary's levels are solid and thick, other valid levels solid and thin, levels that are not valid dashed;
the psoas ROI is dashed and the fat ROI dotted on the axial view.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..volume import Volume
from .wording import muscle_name

TRABECULAR_PREFIX = "trabecular_"  # ROI keys of pipeline.derive_rois
# Display windows (width, level) in HU. Sagittal: bone (vertebral bodies and their ROIs); axial: soft tissue
# wide enough to see the psoas against the fat and the trabecular bone against the cortex.
SAGITTAL_WINDOW_HU = (1500.0, 300.0)
AXIAL_WINDOW_HU = (600.0, 80.0)
# Colours that also differ in lightness (light yellow, mid red, dark blue) for a grey print
TRABECULAR_COLOUR = "#ffd60a"
MUSCLE_COLOUR = "#e0301e"
FAT_COLOUR = "#1f5fbf"
DPI = 150  # enough for a 9 cm wide print (design choice: sharp at A4, fast to render and small)
MARGIN_MM = 25.0  # around the spine (sagittal crop), around the body (axial crop)


def _canvas(width_in: float, height_in: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_axes((0.0, 0.0, 1.0, 1.0))


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", pil_kwargs={"compress_level": 1})  # fast; read once
    return buffer.getvalue()


def _outlined(text_artist: Any) -> None:
    """White text with a black rim: readable on bone, on soft tissue and in grey print."""
    from matplotlib import patheffects

    text_artist.set_path_effects([patheffects.withStroke(linewidth=2.2, foreground="black")])


def _contour(ax: Any, x: np.ndarray, y: np.ndarray, mask: np.ndarray, colour: str, linestyles: str,
             linewidths: float) -> None:
    """An outline in ``colour`` over a solid black one a little wider: visible on bone, on soft tissue and in
    grey print, with its dash pattern (coloured dashes on black) still telling the ROIs apart."""
    ax.contour(x, y, mask.astype(float), [0.5], colors="black", linestyles="solid", linewidths=linewidths + 1.6)
    ax.contour(x, y, mask.astype(float), [0.5], colors=colour, linestyles=linestyles, linewidths=linewidths)


def _sized(fig: Any, extent: tuple[float, float, float, float], width_in: float, max_height_in: float) -> None:
    """The figure's height to the picture's aspect (no blank bands), at most ``max_height_in``."""
    ratio = abs(extent[3] - extent[2]) / max(abs(extent[1] - extent[0]), 1e-6)
    fig.set_size_inches(width_in, min(max_height_in, width_in * ratio))


def trabecular_masks(rois: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k[len(TRABECULAR_PREFIX):]: np.asarray(v, bool) for k, v in rois.items() if k.startswith(TRABECULAR_PREFIX)}


def level_style(level: str, results: dict[str, Any]) -> dict[str, Any]:
    """Line style of a level's ROI: summary (solid, thick), valid (solid, thin), not valid (dashed)."""
    spine = results.get("spine") or {}
    if level in ((spine.get("summary") or {}).get("levels_used") or []):
        return {"linestyles": "solid", "linewidths": 1.8}
    if ((spine.get("levels") or {}).get(level) or {}).get("valid"):
        return {"linestyles": "solid", "linewidths": 0.9}
    return {"linestyles": "dashed", "linewidths": 1.0}


def _window(image: np.ndarray, window_hu: tuple[float, float]) -> dict[str, float]:
    width, level = window_hu
    return {"vmin": level - width / 2, "vmax": level + width / 2}


def _crop(lo: float, hi: float, size: int, margin: float) -> tuple[int, int]:
    return max(0, int(lo - margin)), min(size, int(np.ceil(hi + margin)) + 1)


def sagittal_png(ct: Volume, rois: dict[str, np.ndarray], results: dict[str, Any],
                 width_in: float = 3.3, height_in: float = 3.9) -> bytes | None:
    """The mid-sagittal CT slice through the trabecular ROIs (anterior left, superior up), each level's ROI
    outlined (projected through the body, so every level shows) and named; None without a trabecular ROI."""
    dz, dy, _ = ct.spacing_mm
    union_ji = np.zeros(ct.shape[:2], bool)  # (k, j): any ROI voxel along i
    projections = {}
    i_columns = []
    for level, mask in trabecular_masks(rois).items():
        ks = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        if not ks.size:
            continue  # an emptied ROI (edited away): nothing to outline
        slab = mask[ks[0]:ks[-1] + 1]  # the level's slices only: 10x faster on a 512 x 512 x 300 CT
        proj = np.zeros(ct.shape[:2], bool)
        proj[ks[0]:ks[-1] + 1] = slab.any(axis=2)
        projections[level] = proj
        union_ji |= proj
        i_columns.append(np.flatnonzero(slab.any(axis=(0, 1))))
    if not projections:
        return None
    i_mid = int(np.median(np.concatenate(i_columns)))
    ks, js = np.nonzero(union_ji)
    k0, k1 = _crop(ks.min(), ks.max(), ct.shape[0], MARGIN_MM / dz)
    half_j = max((js.max() - js.min()) / 2 + 2 * MARGIN_MM / dy, 0.45 * (k1 - k0) * dz / dy)  # not too narrow
    centre_j = (js.min() + js.max()) / 2
    j0, j1 = _crop(centre_j - half_j, centre_j + half_j, ct.shape[1], 0)
    image = ct.array[k0:k1, j0:j1, i_mid]
    fig, ax = _canvas(width_in, height_in)
    extent = (j0 * dy, j1 * dy, k0 * dz, k1 * dz)  # mm; k (superior) up
    _sized(fig, extent, width_in, height_in)
    ax.imshow(image, cmap="gray", origin="lower", extent=extent, interpolation="bilinear",
              **_window(image, SAGITTAL_WINDOW_HU))
    jj = (np.arange(j0, j1) + 0.5) * dy
    kk = (np.arange(k0, k1) + 0.5) * dz
    used = ((results.get("spine") or {}).get("summary") or {}).get("levels_used") or []
    label_at = {}
    for level, proj in projections.items():
        style = level_style(level, results)
        _contour(ax, jj, kk, proj[k0:k1, j0:j1], TRABECULAR_COLOUR, style["linestyles"], style["linewidths"])
        lk, lj = np.nonzero(proj)
        label_at[level] = [(lj.max() + 2.5) * dy, (lk.mean() + 0.5) * dz]
    gap_mm = 0.045 * (k1 - k0) * dz  # names never overlap (small ROIs at the edge of the scan lie close)
    ordered = sorted(label_at, key=lambda lvl: label_at[lvl][1])
    for lower, upper in zip(ordered, ordered[1:], strict=False):
        label_at[upper][1] = max(label_at[upper][1], label_at[lower][1] + gap_mm)
    if ordered:  # the top name inside the picture, the others below it
        label_at[ordered[-1]][1] = min(label_at[ordered[-1]][1], k1 * dz - gap_mm / 2)
        for lower, upper in zip(ordered[-2::-1], ordered[:0:-1], strict=False):
            label_at[lower][1] = min(label_at[lower][1], label_at[upper][1] - gap_mm)
    for level, (x, y) in label_at.items():
        _outlined(ax.text(x, y, level, color="white", fontsize=9, fontweight="bold" if level in used else "normal",
                          va="center", ha="left"))
    for x, y, word, ha in ((0.02, 0.98, "A", "left"), (0.98, 0.98, "P", "right")):
        _outlined(ax.text(x, y, word, transform=ax.transAxes, color="white", fontsize=8, ha=ha, va="top"))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.axis("off")
    return _png(fig)


def axial_level(results: dict[str, Any], masks: dict[str, np.ndarray]) -> str | None:
    """The level the axial view cuts: L1 when its ROI has voxels, else the summary's first level, else the first
    level with voxels (None: no ROI has any)."""
    used = ((results.get("spine") or {}).get("summary") or {}).get("levels_used") or []
    order = ["L1", *used, *masks]
    return next((lvl for lvl in order if lvl in masks and masks[lvl].any()), None)


def axial_png(ct: Volume, rois: dict[str, np.ndarray], results: dict[str, Any], level: str | None,
              width_in: float = 3.3, height_in: float = 3.9) -> bytes | None:
    """The axial CT slice through the middle of ``level``'s trabecular ROI (radiological convention: the
    patient's right on the left, anterior up) with that ROI, the muscle ROI (named as measured: psoas or
    paraspinal) and the fat ROI."""
    mask = rois.get(f"{TRABECULAR_PREFIX}{level}") if level else None
    if mask is None or not np.any(mask):
        return None
    ks = np.nonzero(np.asarray(mask).any(axis=(1, 2)))[0]
    k = int(round(float(np.mean(ks))))
    _, dy, dx = ct.spacing_mm
    image = ct.array[k]
    body = image > -500
    if body.any():
        js, is_ = np.nonzero(body)
        j0, j1 = _crop(js.min(), js.max(), image.shape[0], MARGIN_MM / 5 / dy)
        i0, i1 = _crop(is_.min(), is_.max(), image.shape[1], MARGIN_MM / 5 / dx)
    else:
        j0, j1, i0, i1 = 0, image.shape[0], 0, image.shape[1]
    fig, ax = _canvas(width_in, height_in)
    extent = (i0 * dx, i1 * dx, j1 * dy, j0 * dy)  # anterior (j = 0) at the top
    _sized(fig, extent, width_in, height_in)
    ax.imshow(image[j0:j1, i0:i1], cmap="gray", extent=extent, interpolation="bilinear",
              **_window(image, AXIAL_WINDOW_HU))
    ii = (np.arange(i0, i1) + 0.5) * dx
    jj = (np.arange(j0, j1) + 0.5) * dy
    handles = []
    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    drawn = (
        (f"{TRABECULAR_PREFIX}{level}", f"{level} trabecular ROI", TRABECULAR_COLOUR, "solid", 1.6),
        ("muscle_roi", f"{muscle_name(results)} ROI", MUSCLE_COLOUR, "dashed", 1.4),
        ("fat_roi", "fat ROI", FAT_COLOUR, "dotted", 1.8),
    )
    for key, title, colour, style, width in drawn:
        roi = rois.get(key)
        on_slice = roi is not None and np.asarray(roi[k]).any()
        if on_slice:
            _contour(ax, ii, jj, np.asarray(roi[k, j0:j1, i0:i1]), colour, style, width)
        handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=width,
                              label=title + ("" if on_slice else " (not on this slice)"),
                              path_effects=[patheffects.Stroke(linewidth=width + 1.6, foreground="black"),
                                            patheffects.Normal()]))
    legend = ax.legend(handles=handles, loc="lower center", fontsize=6.5, framealpha=0.85, handlelength=2.6)
    legend.get_frame().set_edgecolor("black")
    for x, word, ha in ((0.02, "R", "left"), (0.98, "L", "right")):
        _outlined(ax.text(x, 0.98, word, transform=ax.transAxes, color="white", fontsize=8, ha=ha, va="top"))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.axis("off")
    return _png(fig)


def hip_png(picture: Any, width_in: float = 3.0, max_height_in: float = 3.6) -> bytes:
    """One side's DXA-like projection with its regions (hip/pictures.py draws it)."""
    from ..hip.pictures import draw_projection

    fig, ax = _canvas(width_in, width_in)
    draw_projection(ax, picture)
    ax.set_title("")
    _sized(fig, (*ax.get_xlim(), *ax.get_ylim()), width_in, max_height_in)
    return _png(fig)
