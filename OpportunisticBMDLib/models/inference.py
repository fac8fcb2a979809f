"""``segment(ct)``: the shipped network on a CT, levels named from anatomy, labels on the CT grid.

Resample to the model's isotropic grid (box-average), sliding-window inference (MONAI), naming
and left/right split on the model grid, then class probabilities are upsampled slab by slab to the
CT grid (bounded memory) and each voxel takes the label of the nearest model-grid structure of its
class. CPU by default, CUDA when asked for and present.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..errors import ModelError
from ..labels import LABELS
from ..progress import Progress, no_progress
from ..volume import Volume
from . import anatomy, confidence, naming, resample
from . import keypoints as kp
from .classes import N_CLASSES, NET_CLASSES, NET_INDEX
from .network import split_output
from .weights import DEFAULT_MODEL, load_model

ROI_SIZE = 96  # sliding window edge (voxels at ~3 mm: 29 cm), divisible by the U-Net's 2^3
OVERLAP = 0.25


def resolve_device(device: str | None) -> torch.device:
    device = (device or "cpu").lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return torch.device(device)


@functools.lru_cache(maxsize=4)
def _cached_model(name: str, directory: str | None, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    return load_model(name, Path(directory) if directory else None, device=device)


def warm_up(device: str = "cpu", model: str = DEFAULT_MODEL) -> None:
    """Load the model into this process's cache now (a batch worker before its first case)."""
    _cached_model(model, None, str(resolve_device(device)))


def predict_model_grid(ct: Volume, net: torch.nn.Module, spacing_mm: float, device: torch.device,
                       progress: Progress = no_progress, x: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, np.ndarray, tuple[int, int, int]]:
    """(class probabilities (C, D, H, W) on CPU, heatmap (D, H, W), model-grid shape). ``x``: the network
    input (:func:`resample.to_model_grid`) when the caller made it already."""
    from monai.inferers import sliding_window_inference

    mshape = resample.model_shape(ct.shape, ct.spacing_mm, spacing_mm)
    x = (resample.to_model_grid(ct.array, mshape) if x is None else x).to(device)
    progress(0.15, "segmenting")
    with torch.no_grad():
        out = sliding_window_inference(x, roi_size=(ROI_SIZE,) * 3, sw_batch_size=1, predictor=net,
                                       overlap=OVERLAP, mode="gaussian", padding_mode="constant", cval=0.0)
    logits, heat_logit = split_output(out)
    probs = torch.softmax(logits[0].float(), dim=0).cpu()
    heat = torch.sigmoid(heat_logit[0, 0].float()).cpu().numpy()
    return probs, heat, mshape


def _nearest_label_lut(cls: np.ndarray, schema: np.ndarray) -> np.ndarray:
    """(C, D, H, W): for each class, the schema label of the nearest model voxel of that class."""
    lut = np.zeros((N_CLASSES,) + cls.shape, dtype=np.int16)
    lut[NET_INDEX["body"]] = LABELS["body"]
    for c in range(2, N_CLASSES):
        mask = cls == c
        if not mask.any():
            lut[c] = LABELS["body"]
            continue
        idx = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
        lut[c] = schema[tuple(idx)]
    return lut


def segment(ct: Volume, device: str = "cpu", progress: Progress = no_progress, model: str = DEFAULT_MODEL,
            model_dir: str | Path | None = None, backend: str = "obmd") -> tuple[Volume, dict[str, Any]]:
    """Label map (library schema, on the CT grid) and vertebral body keypoints of a CT in HU.

    ``keypoints`` = ``{"model", "levels": {level: {"position_lps_mm", "index_kji", "heatmap"}},
    "naming": {"method", "confident", "levels_bottom_up"}, "qc": [{code, severity, message}]}``.
    ``labels.metadata["level_confidence"]``: ``{level: {"naming", "segmentation"}}`` (:mod:`.confidence`).
    ``backend="totalsegmentator"`` runs that package instead (when installed).
    """
    if backend == "totalsegmentator":
        from .totalseg_backend import segment_totalsegmentator

        return segment_totalsegmentator(ct, device=device, progress=progress)
    if backend not in ("obmd", "model", None):
        raise ModelError(f"unknown segmentation backend {backend!r} (obmd | totalsegmentator)")
    dev = resolve_device(device)
    progress(0.0, "loading model")
    net, entry = _cached_model(model, str(model_dir) if model_dir else None, str(dev))
    spacing = float(entry["input_spacing_mm"])
    mshape = resample.model_shape(ct.shape, ct.spacing_mm, spacing)
    x = resample.to_model_grid(ct.array, mshape)
    probs, heat, mshape = predict_model_grid(ct, net, spacing, dev, progress, x=x)
    progress(0.6, "naming vertebrae")
    cls = probs.argmax(0).numpy().astype(np.uint8)
    model_spacing = float(np.mean([n * s / m for n, s, m in zip(ct.shape, ct.spacing_mm, mshape, strict=True)]))
    # invented pelvic bones out before they anchor the naming or reach the CT grid
    removed, removals = anatomy.remove_invented_anatomy(cls, resample.model_input_to_hu(x[0, 0].numpy()),
                                                        model_spacing)
    anatomy.move_to_body(probs, removed)
    named = naming.name_levels(cls, heat, model_spacing)
    schema = naming.to_schema(cls, named)
    lut = _nearest_label_lut(cls, schema)
    progress(0.7, "labels to the CT grid")
    out = np.zeros(ct.shape, dtype=np.int16)
    nj = resample.nearest_model_index(ct.shape[1], mshape[1])[None, :, None]
    ni = resample.nearest_model_index(ct.shape[2], mshape[2])[None, None, :]
    nk_all = resample.nearest_model_index(ct.shape[0], mshape[0])
    for zs, fine_cls in resample.upsample_argmax_slabs(probs, ct.shape):
        out[zs] = lut[fine_cls, nk_all[zs][:, None, None], nj, ni]
    progress(0.95, "keypoints")
    points = _keypoints(ct, named, heat, mshape)
    keypoints = {
        "model": {"name": entry["name"], "version": entry.get("version")},
        "levels": points,
        "naming": {"method": named.method, "confident": named.confident,
                   "levels_bottom_up": named.details.get("levels", [])},
        "qc": anatomy.qc_flags(removals) + named.qc,
    }
    labels = ct.like(out, source="model", model=entry["name"], model_version=entry.get("version"),
                     naming_qc=named.qc, naming_method=named.method, naming_confident=named.confident,
                     level_confidence=confidence.level_confidence(named, probs))
    progress(1.0, "segmentation done")
    return labels, keypoints


def _keypoints(ct: Volume, named: naming.Naming, heat: np.ndarray, mshape: tuple[int, int, int]) -> dict[str, Any]:
    points: dict[str, Any] = {}
    for level in named.centres_kji:
        region = ndimage.binary_dilation(named.instances == LABELS[f"vertebra_{level}"], iterations=1)
        peak = kp.heatmap_peak(heat, region)
        conf = float(heat[tuple(np.round(peak).astype(int))]) if peak is not None else 0.0
        if peak is None:
            peak = kp.body_centre_kji(named.instances == LABELS[f"vertebra_{level}"])
        if peak is None:
            continue
        fine = resample.model_to_fine_index(peak, mshape, ct.shape)
        points[level] = {"position_lps_mm": [round(float(v), 2) for v in ct.index_to_lps_mm(fine)],
                         "index_kji": [round(float(v), 2) for v in fine], "heatmap": round(conf, 3)}
    return points


def class_table() -> dict[str, int]:
    return {name: idx for idx, name in enumerate(NET_CLASSES)}
