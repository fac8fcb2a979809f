"""Which Python packages of a requirements file are missing (the module installs them on first use)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path


def missing_requirements(requirements_txt: str | Path) -> list[str]:
    """Lines of a requirements file whose distribution is not installed (versions not checked)."""

    missing = []
    for line in Path(requirements_txt).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]
        try:
            distribution(name)
        except PackageNotFoundError:
            missing.append(line)
    return missing
