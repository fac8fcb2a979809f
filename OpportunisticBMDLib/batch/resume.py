"""``--resume``: a case is done when its folder holds a complete output for the same inputs.

Identity is a content hash (BLAKE2b) of the bytes of every file the case reads (the CT file or DICOM
files, its JSON sidecar, the label map) and of the settings that change its results (the analysis
options, the manifest's age and sex) — not of file names: a renamed archive resumes, a CT replaced under
the same name or a changed option is analysed again. The hash is stored in ``batch.json`` of each
completed case folder; a case folder exists only complete (written whole by ``output_folder``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..io import sidecar_path
from .inputs import CaseInput

CASE_RECORD = "batch.json"  # in each completed case folder: id, input hash, inputs, seconds, series chosen
_CHUNK_BYTES = 1 << 20


def input_files(case: CaseInput) -> list[tuple[str, Path]]:
    """(role, file) of every file the case reads, in a fixed order."""
    files: list[tuple[str, Path]] = []
    ct = Path(case.ct)
    if case.dicom_files:
        files += [("ct", Path(f)) for f in sorted(case.dicom_files)]
    elif ct.is_dir():
        files += [("ct", p) for p in sorted(ct.iterdir()) if p.is_file() and not p.name.startswith(".")]
    else:
        files.append(("ct", ct))
        side = sidecar_path(ct)
        if side.is_file():
            files.append(("ct-sidecar", side))
    if case.seg:
        files.append(("seg", Path(case.seg)))
    return files


def input_hash(case: CaseInput, settings: dict[str, Any]) -> str:
    """Hex digest of the case's input bytes and ``settings`` (JSON-able). OSError when a file is missing."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps({"settings": settings, "age": case.age, "sex": case.sex}, sort_keys=True,
                             default=str).encode())
    for role, path in input_files(case):
        digest.update(f"\0{role}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def completed_record(case_dir: Path, digest: str) -> dict[str, Any] | None:
    """The stored record of a complete output of the same inputs in ``case_dir``, else None."""
    try:
        record = json.loads((case_dir / CASE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("input_hash") != digest or not (case_dir / "results.json").is_file():
        return None
    return record
