"""``obmd analyze`` in a child process so the GUI never freezes (as SlicerMONAIAuto3DSeg runs its
inference): the inputs are written to a work folder, the child's progress comes back as JSON lines
(:class:`.process.BackgroundProcess`), Cancel kills the child's whole process tree, and what ``obmd
analyze`` wrote is read back as an ``AnalysisResult``."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_like, write_sidecar
from ..settings import AnalysisOptions
from ..volume import Volume
from .options import make_options
from .process import BackgroundProcess, ChildProcess


class AnalysisJob:
    """One ``obmd analyze`` run: :meth:`start` writes the inputs and starts it, the GUI's timer reads
    :meth:`poll`, :meth:`cancel` kills it (and everything it started), :meth:`result` reads its outputs."""

    def __init__(
        self,
        argv: list[str],
        work_dir: Path,
        ct: Volume | None,
        labels: Volume | None,
        start_process: Callable[[list[str], dict[str, str]], ChildProcess] = BackgroundProcess,
    ) -> None:
        self.argv, self.work_dir, self.ct, self.labels = argv, Path(work_dir), ct, labels
        self.picture_files: dict[str, Path] = {}
        # The child must import this very package (an extension's folder is not on PythonSlicer's path).
        package_parent = str(Path(__file__).resolve().parents[2])
        pythonpath = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
        self.process = start_process(argv, {"PYTHONPATH": pythonpath})

    @classmethod
    def start(cls, volume_node: Any, segmentation_node: Any, options: AnalysisOptions | dict | None,
              work_dir: str | Path) -> AnalysisJob:
        from .logic import BMDLogic
        from .volumes import volume_from_node

        work_dir = Path(work_dir)
        logic = BMDLogic()
        ct = volume_from_node(volume_node)
        ct_file = ct.like(ct.array)
        ct_file.metadata = {}
        write_like(ct.array, ct_file, work_dir / "ct.nii.gz")
        # the node's header (kVp, age, sex) travels as the copy's sidecar: the job reads the CT as the CLI would
        write_sidecar(ct.metadata, work_dir / "ct.nii.gz")
        python = shutil.which("PythonSlicer") or sys.executable
        argv = [python, "-m", "OpportunisticBMDLib.cli", "analyze", str(work_dir / "ct.nii.gz")]
        labels = None
        if segmentation_node is not None:
            labels = logic.labels_from_node(segmentation_node, volume_node, ct)
            write_like(labels.array.astype(np.int16), ct_file, work_dir / "labels.nii.gz")
            argv += ["--seg", str(work_dir / "labels.nii.gz")]
        argv += ["--out", str(work_dir / "out")]
        argv += _options_to_cli(options)
        return cls(argv, work_dir, ct, labels)

    @property
    def proc(self) -> Any:
        """The child (``subprocess.Popen``)."""
        return self.process.proc

    @property
    def lines(self) -> list[str]:
        """Every output line read so far."""
        return self.process.lines

    @property
    def cancelled(self) -> bool:
        return self.process.cancelled

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def finished_with_results(self) -> bool:
        """``obmd analyze`` ended and wrote its results: measured (exit 0) or ran but nothing could be backed
        (exit 3, results.json status not_measurable: still a result to show and report)."""
        from ..commands.analyze import EXIT_NOT_MEASURABLE

        return not self.cancelled and self.returncode in (0, EXIT_NOT_MEASURABLE)

    def poll(self) -> list[tuple[float | None, str]]:
        """New output lines as (progress fraction or None, text)."""
        return self.process.poll()

    def wait(self, timeout_s: float | None = None) -> int:
        return self.process.wait(timeout_s)

    def cancel(self) -> None:
        """Kill ``obmd analyze`` and every process it started."""
        self.process.cancel()

    def cleanup(self) -> None:
        """Delete the work folder (inputs written for the child and its outputs)."""

        if self.proc.poll() is None:
            self.cancel()
            self.wait(10)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def last_error(self) -> str:
        errors = [line for line in self.lines if "error" in line.lower()]
        return (errors or self.lines or ["(no output)"])[-1]

    def result(self) -> Any:
        """The ``AnalysisResult`` written by ``obmd analyze`` (results.json and masks/*.nii.gz)."""
        from ..io import read_labels
        from ..pipeline import AnalysisResult

        out = self.work_dir / "out"
        results = json.loads((out / "results.json").read_text())
        if self.ct is not None:
            _input_of_the_node(results, self.ct)
        rois = {
            path.name[: -len(".nii.gz")]: read_labels(path, like=self.ct).array > 0
            for path in sorted((out / "masks").glob("*.nii.gz"))
        }
        labels, keypoints, predicted = self.labels, {}, False
        if (out / "labels.nii.gz").exists():  # the models segmented the CT
            labels, predicted = read_labels(out / "labels.nii.gz", like=self.ct), True
        # Report PNGs are files here, not the HipPicture objects write_outputs expects: kept aside.
        self.picture_files = {path.stem: path for path in sorted(out.glob("*hip*.png"))}
        if (out / "keypoints.json").exists():
            levels = json.loads((out / "keypoints.json").read_text()).get("levels", {})
            keypoints = {f"{lvl} body": np.asarray(v["index_kji"]) for lvl, v in levels.items() if v.get("index_kji")}
        return AnalysisResult(results=results, rois=rois, labels=labels, keypoints=keypoints,
                              labels_predicted=predicted)


def _input_of_the_node(results: dict, ct: Volume) -> None:
    """The child analysed a temporary NIfTI copy of the node's CT: results.json ``input`` names what the node
    came from instead (its DICOM folder and series, its header's identification), as an Analyze in Slicer's
    own process records it; Save report then writes ``dicom/`` for a DICOM CT and says so consistently."""
    from ..report.identification import identification

    inputs = results.setdefault("input", {})
    inputs["ct"] = ct.metadata.get("path")
    for key in ("format", "series_choice"):
        if key in ct.metadata:
            inputs[key] = ct.metadata[key]
        else:
            inputs.pop(key, None)
    inputs["identification"] = identification(ct.metadata)


def _options_to_cli(options: AnalysisOptions | dict | None) -> list[str]:
    """``obmd analyze`` flags for :class:`settings.AnalysisOptions` (or a dict of its fields)."""
    return [] if options is None else make_options(options).to_argv()
