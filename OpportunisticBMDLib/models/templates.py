"""Anatomy templates for training: label maps (plus optional images) resampled to the model grid.

A template is a :class:`Template`: ``tissue`` ids (fine-grained, one random intensity each, as in
SynthSeg), the tissue type of each id (for its plausible HU range), the network ``target`` classes and
the keypoint ``heat`` map. Sources: the library schema (phantoms, nnU-Net datasets) and
TotalSegmentator ``total`` label maps (anatomy templates; their CT's real HU only when asked, see
:func:`from_totalseg`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..labels import LABEL_NAMES, LABELS, TOTALSEG_TOTAL_IDS, VERTEBRA_LEVELS, totalseg_to_ours
from ..volume import Volume
from . import keypoints
from .classes import ours_to_net

# Library schema name -> tissue type (see synth.TISSUE_HU)
_OURS_TISSUE: dict[str, str] = {
    **{f"vertebra_{lvl}": "bone" for lvl in VERTEBRA_LEVELS},
    "sacrum": "bone", "hip_left": "bone", "hip_right": "bone", "femur_left": "bone", "femur_right": "bone",
    "rib_left_11": "rib", "rib_right_11": "rib", "rib_left_12": "rib", "rib_right_12": "rib", "ribs_other": "rib",
    "intervertebral_disc": "disc",
    "psoas_left": "muscle", "psoas_right": "muscle", "paraspinal_left": "muscle", "paraspinal_right": "muscle",
    "other_muscle": "muscle", "subcutaneous_fat": "fat", "visceral_fat": "fat", "body": "soft",
    "aorta": "blood", "inferior_vena_cava": "blood", "liver": "organ", "spleen": "organ", "kidney_left": "kidney",
    "kidney_right": "kidney", "bowel": "bowel", "bowel_gas": "gas", "metal": "metal", "table": "table",
    "background": "air",
}
OURS_TISSUE_TYPES: dict[int, str] = {LABELS[n]: t for n, t in _OURS_TISSUE.items()}

# TotalSegmentator `total` name fragments -> tissue type (first match wins)
_TS_TISSUE_RULES: tuple[tuple[str, str], ...] = (
    ("lung", "lung"), ("trachea", "gas"), ("rib", "rib"), ("costal", "cartilage"), ("vertebrae", "bone"),
    ("sacrum", "bone"), ("hip", "bone"), ("femur", "bone"), ("humerus", "bone"), ("scapula", "bone"),
    ("clavicula", "bone"), ("sternum", "bone"), ("skull", "bone"), ("gluteus", "muscle"), ("autochthon", "muscle"),
    ("iliopsoas", "muscle"), ("aorta", "blood"), ("vena", "blood"), ("vein", "blood"), ("artery", "blood"),
    ("heart", "blood"), ("atrial", "blood"), ("kidney_cyst", "fluid"), ("kidney", "kidney"), ("bladder", "fluid"),
    ("gallbladder", "fluid"), ("bowel", "bowel"), ("colon", "bowel"), ("duodenum", "bowel"), ("stomach", "bowel"),
    ("esophagus", "bowel"), ("liver", "organ"), ("spleen", "organ"), ("pancreas", "organ"),
)
# Extra tissue ids for HU-derived classes of a TotalSegmentator template (above TS ids)
T_SOFT, T_SUBCUT_FAT, T_VISC_FAT, T_GAS, T_DISC = 200, 201, 202, 203, 204

MODEL_SPACING_MM = 3.0


@dataclass
class Template:
    name: str
    tissue: np.ndarray  # int16 (k, j, i) tissue ids
    tissue_types: dict[int, str]
    target: np.ndarray  # uint8 network classes
    heat: np.ndarray  # float32 keypoint heatmap
    image_hu: np.ndarray | None = None  # a synthetic image already in HU (phantom CT), else None
    spacing_mm: float = MODEL_SPACING_MM
    weight: float = 1.0  # relative sampling frequency in training
    split: str = "train"  # "train" or "val" (kept in template bundles)
    image_fraction: float = 0.7  # share of patches drawn from image_hu (the rest: synthetic intensities)


def _ts_tissue_type(name: str) -> str:
    for fragment, tissue in _TS_TISSUE_RULES:
        if fragment in name:
            return tissue
    return "soft"


def resample_to_spacing(volume: Volume, spacing_mm: float, labels: bool) -> np.ndarray:
    """Array of ``volume`` resampled (in its own k, j, i frame) to isotropic ``spacing_mm``."""
    import SimpleITK as sitk  # lazy: training from a template bundle needs no SimpleITK (GPU machines)

    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(float(s) for s in volume.spacing_mm[::-1]))
    size = [max(1, int(round(n * s / spacing_mm))) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    ref = sitk.Image(size, image.GetPixelID())
    ref.SetSpacing([spacing_mm] * 3)
    # align the grids' outer edges: voxel centres at (m + 0.5) * spacing from the edge
    ref.SetOrigin([-(s / 2) + spacing_mm / 2 for s in image.GetSpacing()])
    interp = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    if not labels and min(volume.spacing_mm) < spacing_mm:
        sigmas = [max(0.0, 0.4 * (spacing_mm - s)) for s in image.GetSpacing()]
        image = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigmas)
    return sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk.Transform(), interp, -1000.0 if not labels else 0))


def subcutaneous_fat_mask(fat: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Fat reached from the skin through fat only, slice by slice (rays from the body's outside in).

    Ray casting along both in-plane axes in both directions: a fat voxel is subcutaneous when a
    straight run of fat (after at most 2 skin voxels) connects it to the outside of the body.
    """
    out = np.zeros_like(fat)
    for axis in (1, 2):
        for flip in (False, True):
            f = np.flip(fat, axis) if flip else fat
            b = np.flip(body, axis) if flip else body
            inside_depth = np.cumsum(b, axis=axis)
            # allow a thin skin layer (<= 2 voxels at 3 mm) before the fat starts
            fat_or_skin = f | (b & (inside_depth <= 2)) | ~b
            run = np.cumprod(fat_or_skin, axis=axis).astype(bool) & f & b
            out |= np.flip(run, axis) if flip else run
    return ndimage.binary_opening(out, iterations=1) | (out & ndimage.binary_erosion(out))


def from_totalseg(seg_path: Path, ct_hu_for_tissue_classes: Path | None = None,
                  vertebrae_body_path: Path | None = None, name: str | None = None,
                  use_image: bool = False) -> Template:
    """A template from a TotalSegmentator ``total`` label map.

    Body outline, fat and gas are not in ``total``; when ``ct_hu_for_tissue_classes`` is given they
    are derived by HU thresholds (body > -500 HU, fat -190..-30 HU, gas < -500 HU inside). With
    ``use_image`` that CT's real HU are kept as the template's image (trained on, with intensity
    augmentation, besides the synthetic intensities of its label map); otherwise they never are.
    """
    from ..io import read_labels

    seg = read_labels(seg_path)
    ts = seg.array.astype(np.int16)
    tissue = ts.copy()
    types = {i: _ts_tissue_type(n) for i, n in _ts_names().items()}
    types[0] = "air"
    ct_volume = None
    if ct_hu_for_tissue_classes is not None:
        from ..io import read_ct

        ct_volume = read_ct(ct_hu_for_tissue_classes)
        ct = ct_volume.array
        body = ndimage.binary_fill_holes(ndimage.binary_closing(ct > -500, iterations=2), structure=np.ones((1, 3, 3)))
        lab, n = ndimage.label(body)
        if n:
            body = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        free = body & (ts == 0)
        fat = free & (ct > -190) & (ct < -30)
        subcut = subcutaneous_fat_mask(fat, body)
        tissue[free] = T_SOFT
        tissue[fat] = T_VISC_FAT
        tissue[subcut & fat] = T_SUBCUT_FAT
        tissue[free & (ct < -500)] = T_GAS
    if vertebrae_body_path is not None:
        disc = read_labels(vertebrae_body_path).array == 2
        tissue[disc & ((ts == 0) | (tissue == T_SOFT) | (tissue == T_VISC_FAT))] = T_DISC
    types.update({T_SOFT: "soft", T_SUBCUT_FAT: "fat", T_VISC_FAT: "fat", T_GAS: "gas", T_DISC: "disc"})
    ours = totalseg_to_ours(ts)
    ours[(ours == 0) & (tissue > 0)] = LABELS["body"]
    ours[tissue == T_SUBCUT_FAT] = LABELS["subcutaneous_fat"]
    ours[tissue == T_DISC] = LABELS["intervertebral_disc"]
    vol = seg.like(ours.astype(np.int16))
    if use_image and ct_volume is None:
        raise ValueError("use_image needs the CT (ct_hu_for_tissue_classes)")
    return from_volumes(name or seg_path.parent.name, vol, tissue=seg.like(tissue), tissue_types=types,
                        image_hu=ct_volume if use_image else None)


def _ts_names() -> dict[int, str]:
    names = dict(TOTALSEG_TOTAL_IDS)
    label_maps = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "totalseg-example" / "label_maps.json"
    if label_maps.exists():
        names.update({int(k): v for k, v in json.loads(label_maps.read_text())["total"].items()})
    return names


def from_volumes(name: str, labels: Volume, image_hu: Volume | None = None, tissue: Volume | None = None,
                 tissue_types: dict[int, str] | None = None, spacing_mm: float = MODEL_SPACING_MM) -> Template:
    """A template from a library-schema label map (and optionally its image, or finer tissue ids)."""
    lab = resample_to_spacing(labels, spacing_mm, labels=True).astype(np.int16)
    tis = resample_to_spacing(tissue, spacing_mm, labels=True).astype(np.int16) if tissue is not None else lab
    types = tissue_types if tissue_types is not None else OURS_TISSUE_TYPES
    img = resample_to_spacing(image_hu, spacing_mm, labels=False).astype(np.float32) if image_hu is not None else None
    target = ours_to_net(lab).astype(np.uint8)
    level_ids = {lvl: LABELS[f"vertebra_{lvl}"] for lvl in VERTEBRA_LEVELS}
    centres = list(keypoints.level_centres(lab, level_ids).values())
    heat = keypoints.heatmap(lab.shape, centres, (spacing_mm,) * 3)
    return Template(name=name, tissue=tis, tissue_types=types, target=target, heat=heat, image_hu=img,
                    spacing_mm=spacing_mm)


def from_nnunet_case(image_path: Path, label_path: Path, use_image: bool = True) -> Template:
    """A template from one nnU-Net raw case (labels in the library schema, see dataset.json)."""
    from ..io import read_ct, read_labels

    labels = read_labels(label_path)
    image = read_ct(image_path) if use_image else None
    return from_volumes(label_path.name.split(".")[0], labels, image_hu=image)


def from_phantom_dir(path: Path, use_image: bool = False) -> Template:
    """A template from ``obmd phantom`` output (``labels.nii.gz`` and optionally its ``ct.nii.gz``)."""
    from ..io import read_labels

    labels = read_labels(path / "labels.nii.gz")
    image = None
    if use_image:
        from ..io import read_ct

        image = read_ct(path / "ct.nii.gz")
    return from_volumes(path.name, labels, image_hu=image)


def phantom_template(seed: int, use_image: bool = False, weight: float = 1.0, **phantom_options: Any) -> Template:
    """A template from digital patient ``seed`` (:func:`OpportunisticBMDLib.phantom.generator.generate_phantom`)
    built directly at the model spacing; ``phantom_options`` go to ``PhantomOptions`` (region, contrast, metal...)."""
    from ..phantom.generator import generate_phantom
    from ..phantom.options import PhantomOptions

    opts = PhantomOptions(spacing_mm=(MODEL_SPACING_MM,) * 3, **phantom_options)
    phantom = generate_phantom(seed, opts)
    tpl = from_volumes(f"phantom{seed}", phantom.labels, image_hu=phantom.ct if use_image else None)
    tpl.weight = weight
    return tpl


def label_names() -> dict[int, str]:
    return dict(LABEL_NAMES)


def default_shared_templates(shared_dir: Path, use_image: bool = False,
                             image_fraction: float = 0.7) -> list[Template]:
    """Templates from ``../shared/data/totalseg-example`` label maps (never its DICOM case); with
    ``use_image`` its CT's real HU too, drawn in ``image_fraction`` of its patches."""
    discs = shared_dir / "ct_seg_vertebrae_body.nii.gz"  # its disc label, where the folder has it
    full = from_totalseg(shared_dir / "ct_seg_total.nii.gz", shared_dir / "ct.nii.gz",
                         discs if discs.is_file() else None, name="totalseg-example", use_image=use_image)
    full.image_fraction = image_fraction
    return [full]


def save_bundle(templates: list[Template], path: Path) -> Path:
    """Write templates to one compressed ``.npz`` (no pickle) so training can run where neither
    SimpleITK nor the phantom physics packages are installed (e.g. a lent GPU machine).
    Images are stored as int16 HU (rounding is far below the synthetic noise)."""
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for n, t in enumerate(templates):
        arrays[f"{n}_tissue"], arrays[f"{n}_target"] = t.tissue, t.target
        # heat in [0, 1] as 1/255 steps: 100x smaller compressed, far finer than the network fits it
        arrays[f"{n}_heat"] = np.round(np.clip(t.heat, 0, 1) * 255).astype(np.uint8)
        if t.image_hu is not None:
            arrays[f"{n}_image"] = np.round(t.image_hu).clip(-32768, 32767).astype(np.int16)
        meta.append({"name": t.name, "tissue_types": {str(k): v for k, v in t.tissue_types.items()},
                     "spacing_mm": t.spacing_mm, "weight": t.weight, "image": t.image_hu is not None,
                     "split": t.split, "image_fraction": t.image_fraction})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return Path(path)


def load_bundle(path: Path) -> list[Template]:
    """Templates written by :func:`save_bundle`."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        return [Template(name=m["name"], tissue=data[f"{n}_tissue"], target=data[f"{n}_target"],
                         tissue_types={int(k): v for k, v in m["tissue_types"].items()},
                         heat=data[f"{n}_heat"].astype(np.float32) / 255,
                         image_hu=data[f"{n}_image"].astype(np.float32) if m["image"] else None,
                         spacing_mm=m["spacing_mm"], weight=m["weight"], split=m.get("split", "train"),
                         image_fraction=m.get("image_fraction", 0.7))
                for n, m in enumerate(meta)]
