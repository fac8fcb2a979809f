"""The inputs of ``obmd bench robustness``: each case builds real files from the shared CT and says what
``obmd analyze`` must do with them (refuse, report no category, or a backed category). The tests run the
same table (Testing/benchmarks/test_bench_robustness.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ._input_cases import CASES as INPUT_CASES
from ._input_cases import Builder as InputBuilder

# the shared real CT (shared/data/README.md), relative to the project root as CI lays it out
DEFAULT_SHARED = Path("../shared/data/totalseg-example")


@dataclass(frozen=True)
class Shared:
    """Where the shared real CT lies."""

    folder: Path = DEFAULT_SHARED

    @property
    def ct(self) -> Path:
        return self.folder / "ct.nii.gz"

    @property
    def labels(self) -> Path:
        return self.folder / "ct_seg_total.nii.gz"

# TotalSegmentator "total" ids on the shared CT (shared/data/README.md): k = 0 is the most inferior slice
TS_L1 = 31
TS_ILIOPSOAS = (88, 89)


@dataclass(frozen=True)
class Expectation:
    """``refused``: exit 2 and the regular expression ``message`` found in the error line (within 3 s when
    ``before_model``: an input error is refused before any heavy work); ``no_category``: no ACR/WHO category
    anywhere; ``category``: a backed spine category (a valid scan). ``flags``: QC codes that must be in
    results.json."""

    outcome: str
    message: str = ""
    flags: tuple[str, ...] = ()
    before_model: bool = True


@dataclass(frozen=True)
class CaseInput:
    argv: list[str]  # obmd analyze arguments (with --out)
    inputs: list[Path]  # files whose bytes must not change
    second_argv: list[str] | None = None  # a second run into the same --out


@dataclass(frozen=True)
class BadInputCase:
    name: str
    description: str
    build: Callable[[Path, Shared], CaseInput]
    expect: Expectation
    tags: tuple[str, ...] = field(default=())


def _read(path: Path) -> tuple[sitk.Image, np.ndarray]:
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def _write(array: np.ndarray, like: sitk.Image, path: Path, index_offset: tuple[int, int, int] = (0, 0, 0)) -> Path:
    """``array`` (k, j, i) with ``like``'s geometry, its origin moved to voxel ``index_offset`` (k, j, i)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(like.GetSpacing())
    image.SetDirection(like.GetDirection())
    image.SetOrigin(like.TransformIndexToPhysicalPoint([int(index_offset[2]), int(index_offset[1]),
                                                        int(index_offset[0])]))
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def _shared_crop(folder: Path, shared: Shared, k0: int, k1: int) -> tuple[Path, Path]:
    """The shared CT and its labels, slices k0..k1-1 (the CT's own geometry kept)."""
    image, ct = _read(shared.ct)
    _, labels = _read(shared.labels)
    ct_path = _write(ct[k0:k1], image, folder / "ct.nii.gz", (k0, 0, 0))
    labels_path = _write(labels[k0:k1].astype(np.uint8), image, folder / "labels.nii.gz", (k0, 0, 0))
    return ct_path, labels_path


def _out(folder: Path) -> list[str]:
    return ["--out", str(folder / "out")]


def valid_shared_ct(folder: Path, shared: Shared) -> CaseInput:
    return CaseInput([str(shared.ct), "--seg", str(shared.labels), *_out(folder)], [shared.ct, shared.labels])


def slab_10_slices(folder: Path, shared: Shared) -> CaseInput:
    """A 30 mm slab through L1: every vertebra cut by the field of view (read 174.4 'normal' before)."""
    _, labels = _read(shared.labels)
    ks = np.nonzero((labels == TS_L1).any(axis=(1, 2)))[0]
    k0 = int(ks.mean()) - 5
    ct, lab = _shared_crop(folder, shared, k0, k0 + 10)
    return CaseInput([str(ct), "--seg", str(lab), *_out(folder)], [ct, lab])


def pelvis_crop(folder: Path, shared: Shared) -> CaseInput:
    """Sacrum and the lower half of L5 only (a 63 mm3 L5 ROI read 170.6 'normal' before)."""
    ct, lab = _shared_crop(folder, shared, 0, 52)
    return CaseInput([str(ct), "--seg", str(lab), *_out(folder)], [ct, lab])


def hip_only_cut(folder: Path, shared: Shared) -> CaseInput:
    """Femoral heads and necks, shaft cut: no spine, the hip's axis not in view."""
    ct, lab = _shared_crop(folder, shared, 4, 40)
    return CaseInput([str(ct), "--seg", str(lab), *_out(folder)], [ct, lab])


def wrong_phantom_line(folder: Path, shared: Shared) -> CaseInput:
    """A phantom line typed wrongly (3 mg/cm3 per HU): spine and hip values beyond any living bone."""
    return CaseInput([str(shared.ct), "--seg", str(shared.labels), "--slope", "3.0", "--intercept", "0",
                      *_out(folder)], [shared.ct, shared.labels])


def single_small_roi(folder: Path, shared: Shared) -> CaseInput:
    """Labels holding one vertebra (T12) shrunk to a few voxels (a 0.35 cm3 ROI had a green 'normal')."""
    image, labels = _read(shared.labels)
    keep = labels == TS_L1
    ks, js, is_ = np.nonzero(keep)
    centre = (int(np.median(ks)), int(np.median(js)), int(np.median(is_)))
    small = np.zeros_like(labels, dtype=np.uint8)
    for psoas in TS_ILIOPSOAS:  # the psoas stays: the calibration can run
        small[labels == psoas] = psoas
    small[centre[0] - 3: centre[0] + 4, centre[1] - 3: centre[1] + 4, centre[2] - 3: centre[2] + 4] = TS_L1
    lab = _write(small, image, folder / "labels.nii.gz")
    return CaseInput([str(shared.ct), "--seg", str(lab), *_out(folder)], [shared.ct, lab])


def two_patients_one_folder(folder: Path, shared: Shared) -> CaseInput:
    """The whole shared CT (with hip pictures) and then a slab into the same --out."""
    ct, lab = _shared_crop(folder, shared, 30, 112)
    first = [str(shared.ct), "--seg", str(shared.labels), *_out(folder)]
    second = [str(ct), "--seg", str(lab), *_out(folder)]
    return CaseInput(first, [shared.ct, shared.labels, ct, lab], second_argv=second)


def scaled_non_hu(folder: Path, shared: Shared) -> CaseInput:
    """Values halved (a non-HU export that still has negative air) with internal-multi (a traceback before)."""
    image, ct = _read(shared.ct)
    path = _write((ct.astype(np.float32) * 0.5).astype(np.int16), image, folder / "ct.nii.gz")
    return CaseInput([str(path), "--seg", str(shared.labels), "--calibration", "internal-multi", *_out(folder)],
                     [path, shared.labels])


def _thickened(folder: Path, shared: Shared, factor: int) -> CaseInput:
    """The shared CT (3 mm) as ``3 x factor`` mm contiguous slices: each the mean of ``factor`` thin ones (what a
    thick reconstruction is), labels from the middle thin slice."""
    image, ct = _read(shared.ct)
    _, labels = _read(shared.labels)
    n = ct.shape[0] // factor * factor
    thick = ct[:n].reshape(-1, factor, *ct.shape[1:]).astype(np.float32).mean(axis=1)
    mid = labels[factor // 2: n: factor]
    spacing = image.GetSpacing()
    like = sitk.Image(image)
    like.SetSpacing((spacing[0], spacing[1], spacing[2] * factor))
    # the thick slice's centre sits at the middle thin slice's centre
    like.SetOrigin(image.TransformIndexToPhysicalPoint([0, 0, factor // 2]))
    ct_path = _write(np.round(thick).astype(np.int16), like, folder / "ct.nii.gz")
    lab_path = _write(mid.astype(np.uint8), like, folder / "labels.nii.gz")
    return CaseInput([str(ct_path), "--seg", str(lab_path), *_out(folder)], [ct_path, lab_path])


def thick_slices_6mm(folder: Path, shared: Shared) -> CaseInput:
    """6 mm slices (+10 to +14 mg/cm3 before the ROI kept clear of the endplates; now flagged and measured)."""
    return _thickened(folder, shared, 2)


def thick_slices_9mm(folder: Path, shared: Shared) -> CaseInput:
    """9 mm slices: a body spans two or three slices; vBMD and category withheld."""
    return _thickened(folder, shared, 3)


def no_iliopsoas(folder: Path, shared: Shared) -> CaseInput:
    """Labels without the iliopsoas: the muscle reference falls back to paraspinal muscle (+19 mg/cm3 here)."""
    image, labels = _read(shared.labels)
    lab = _write(np.where(np.isin(labels, TS_ILIOPSOAS), 0, labels).astype(np.uint8), image, folder / "labels.nii.gz")
    return CaseInput([str(shared.ct), "--seg", str(lab), *_out(folder)], [shared.ct, lab])


def out_is_the_ct_folder(folder: Path, shared: Shared) -> CaseInput:
    """``obmd analyze DIR/ct.nii.gz --out DIR`` with the user's ``DIR/labels.nii.gz`` beside it (overwritten
    before): the model run would write its own labels.nii.gz there."""
    ct, lab = _shared_crop(folder, shared, 0, 112)
    return CaseInput([str(ct), "--out", str(folder)], [ct, lab])


def out_is_a_file(folder: Path, shared: Shared) -> CaseInput:
    """--out names an existing file (a traceback after the whole analysis before)."""
    target = folder / "results.txt"
    target.write_text("the user's notes\n")
    return CaseInput([str(shared.ct), "--seg", str(shared.labels), "--out", str(target)],
                     [shared.ct, shared.labels, target])


def out_read_only(folder: Path, shared: Shared) -> CaseInput:
    """--out inside a folder without write permission."""
    locked = folder / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o555)
    return CaseInput([str(shared.ct), "--seg", str(shared.labels), "--out", str(locked / "out")],
                     [shared.ct, shared.labels])


def model_on_slab(folder: Path, shared: Shared) -> CaseInput:
    """The segmentation model (no --seg) on a 30 mm slab: whatever it finds cannot back a category."""
    made = slab_10_slices(folder, shared)
    return CaseInput([made.argv[0], *_out(folder)], made.inputs)


def _input_case(make: InputBuilder) -> Callable[[Path, Shared], CaseInput]:
    """A builder of input_cases (CT and labels made from the shared CT) as a robustness case."""
    def build(folder: Path, shared: Shared) -> CaseInput:
        made = make(shared.ct, shared.labels, folder)
        seg = ["--seg", str(made["seg"])] if made.get("seg") else []
        inputs = [p for p in (made["ct"], made.get("seg"), shared.ct, shared.labels) if p]
        return CaseInput([str(made["ct"]), *seg, *_out(folder)], inputs)
    return build


INPUT_ERROR_CASES = tuple(
    BadInputCase(name, (make.__doc__ or name).split("\n")[0], _input_case(make),
                 Expectation("refused", message, before_model=name != "no_spine_model"),
                 tags=("model",) if name == "no_spine_model" else ())
    for name, (make, message) in INPUT_CASES.items())

CASES: dict[str, BadInputCase] = {c.name: c for c in (*INPUT_ERROR_CASES,
    BadInputCase("valid_shared_ct", "the shared CT with its labels (control: L1-L2 backed)", valid_shared_ct,
                 Expectation("category")),
    BadInputCase("slab_10_slices", "10-slice slab through L1", slab_10_slices, Expectation("no_category")),
    BadInputCase("pelvis_crop", "pelvis crop, L5 cut", pelvis_crop, Expectation("no_category")),
    BadInputCase("hip_only_cut", "femoral heads, shaft cut by the field of view", hip_only_cut,
                 Expectation("no_category")),
    BadInputCase("wrong_phantom_line", "phantom line 3 mg/cm3 per HU", wrong_phantom_line,
                 Expectation("no_category")),
    BadInputCase("single_small_roi", "one 0.3 cm3 vertebra", single_small_roi, Expectation("no_category")),
    BadInputCase("two_patients_one_folder", "two patients into one --out (the second is valid)",
                 two_patients_one_folder, Expectation("category")),
    BadInputCase("scaled_non_hu", "values halved, internal-multi", scaled_non_hu,
                 Expectation("refused", "not in HU")),
    BadInputCase("thick_slices_6mm", "the CT as 6 mm slices (valid, flagged)", thick_slices_6mm,
                 Expectation("category", flags=("slice_thick",))),
    BadInputCase("thick_slices_9mm", "the CT as 9 mm slices", thick_slices_9mm,
                 Expectation("no_category", flags=("slice_too_thick",))),
    BadInputCase("no_iliopsoas", "labels without the iliopsoas", no_iliopsoas,
                 Expectation("no_category", flags=("muscle_not_psoas",))),
    BadInputCase("out_is_the_ct_folder", "--out is the CT's own folder", out_is_the_ct_folder,
                 Expectation("refused", "input")),
    BadInputCase("out_is_a_file", "--out is an existing file", out_is_a_file, Expectation("refused", "file")),
    BadInputCase("out_read_only", "--out in a read-only folder", out_read_only, Expectation("refused", "writ")),
    BadInputCase("model_on_slab", "the model on a 30 mm slab", model_on_slab, Expectation("no_category"),
                 tags=("model",)),
)}
