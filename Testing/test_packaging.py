"""Slicer packages only the files a CMakeLists.txt names: every shipped file must be listed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGED_SUFFIXES = {".py", ".ui", ".png", ".json", ".safetensors", ".txt", ".svg"}
PACKAGED_DIRS = ["OpportunisticBMD", "OpportunisticBMDLib", "Resources"]


def _shipped_files(directory: Path) -> list[str]:
    files = []
    for path in directory.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts or path.name == "CMakeLists.txt":
            continue
        if path.suffix in PACKAGED_SUFFIXES:
            files.append(path.relative_to(directory).as_posix())
    return sorted(files)


def _listed_tokens(cmake_file: Path) -> set[str]:
    text = re.sub(r"#[^\n]*", "", cmake_file.read_text())
    text = text.replace("${MODULE_NAME}", "OpportunisticBMD")
    return set(re.findall(r"[\w./-]+", text))


@pytest.mark.parametrize("dirname", PACKAGED_DIRS)
def test_every_shipped_file_is_listed_in_cmake(dirname: str) -> None:
    directory = REPO / dirname
    listed = _listed_tokens(directory / "CMakeLists.txt")
    missing = [f for f in _shipped_files(directory) if f not in listed]
    assert not missing, f"{dirname}/CMakeLists.txt does not list: {missing}"


def test_top_level_cmake_adds_every_packaged_directory() -> None:
    text = (REPO / "CMakeLists.txt").read_text()
    for dirname in PACKAGED_DIRS:
        assert f"add_subdirectory({dirname})" in text
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "find_package(Slicer"):
        assert key in text
    assert "Slicer_EXTENSION_CPACK" in text


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make demo" in readme
