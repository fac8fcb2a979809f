"""`obmd analyze --out DIR` output integrity (issue 13): DIR is checked before the CT is read, never next to or
inside an input, written whole into a fresh folder that replaces it (nothing of an earlier case survives), locked
against a second run, and left as it was when a run fails or is interrupted. Real CLI runs on the shared CT."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.errors import InputError
from OpportunisticBMDLib.output_folder import MARKER_NAME, acquire_lock, check_output_target

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crop(shared_data) -> dict[str, Path]:
    folder = shared_data / "crop_T12-L2"
    return {"ct": folder / "ct.nii.gz", "seg": folder / "ct_seg_total.nii.gz",
            "muscle": folder / "skeletal_muscle.nii.gz"}


def _hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under (or at) ``roots``."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _analyze(ct: Path, out: Path, *extra: str) -> int:
    return main(["analyze", str(ct), "--out", str(out), "--quiet", *extra])


def _child(ct: Path, seg: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-m", "OpportunisticBMDLib.cli", "analyze", str(ct), "--seg", str(seg),
                             "--out", str(out), "--quiet", "--json-only"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def _leftovers(out: Path) -> list[str]:
    """What a run left beside DIR (its temporary folder, lock, set-aside old result)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".obmd-"))


def test_out_that_is_a_file_is_refused_before_the_analysis(shared_data, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("the user's notes\n")
    start = time.perf_counter()
    rc = _analyze(shared_data / "ct.nii.gz", target, "--seg", str(shared_data / "ct_seg_total.nii.gz"))
    elapsed_s = time.perf_counter() - start
    assert rc == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert elapsed_s < 3.0  # the whole CT's analysis takes ~5 s: refused before it, not after
    assert target.read_text() == "the user's notes\n" and _leftovers(target) == []


def test_out_that_cannot_be_written_is_refused(crop, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert _analyze(crop["ct"], a_file / "sub", "--seg", str(crop["seg"])) == 2
    assert f"{a_file} is a file, not a folder" in capsys.readouterr().err
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)  # no write bit: refused even for root, who could write there
    try:
        for target in (read_only / "out", read_only):
            assert _analyze(crop["ct"], target, "--seg", str(crop["seg"])) == 2
            assert f"{read_only} is not writable" in capsys.readouterr().err
        assert list(read_only.iterdir()) == []
    finally:
        read_only.chmod(0o755)


def test_a_folder_holding_an_input_is_refused_and_no_input_is_written(crop, shared_data, tmp_path, capsys):
    case = tmp_path / "case"  # the case: DIR/ct.nii.gz --out DIR overwrote the user's DIR/labels.nii.gz
    case.mkdir()
    shutil.copy(crop["ct"], case / "ct.nii.gz")
    shutil.copy(crop["seg"], case / "labels.nii.gz")
    before = _hashes(tmp_path, crop["ct"].parent)
    ct, labels = case / "ct.nii.gz", str(case / "labels.nii.gz")
    for ct_path, argv, target in ((ct, [], case), (ct, ["--seg", labels], case),  # without and with --seg
                                  (crop["ct"], ["--seg", labels], case),  # the labels only in DIR
                                  (ct, ["--seg", str(crop["seg"])], tmp_path),  # an input at any depth under DIR
                                  (crop["ct"], ["--seg", str(crop["seg"]), "--body-seg", labels], case)):
        assert _analyze(ct_path, target, *argv) == 2
        err = capsys.readouterr().err
        assert f"--out {target} holds the input" in err and f"{target}-obmd" in err, err
    series = shared_data / "dicom_upper_abdomen" / "series"
    assert _analyze(series, series / "out") == 2  # inside a DICOM series folder given as input
    assert "is inside the input folder" in capsys.readouterr().err
    assert not (series / "out").exists()
    assert _hashes(tmp_path, crop["ct"].parent) == before
    assert sorted(p.name for p in case.iterdir()) == ["ct.nii.gz", "labels.nii.gz"]


def test_inputs_elsewhere_are_never_written(crop, tmp_path):
    ct_dir, labels_dir, out = tmp_path / "scans", tmp_path / "labels", tmp_path / "results"
    ct_dir.mkdir()
    labels_dir.mkdir()
    shutil.copy(crop["ct"], ct_dir / "ct.nii.gz")
    shutil.copy(crop["seg"], labels_dir / "labels.nii.gz")
    before = _hashes(ct_dir, labels_dir)
    assert _analyze(ct_dir / "ct.nii.gz", out, "--seg", str(labels_dir / "labels.nii.gz")) == 0
    assert _hashes(ct_dir, labels_dir) == before
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "masks", "report.pdf", "results.csv", "results.json"]
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["software"] == "OpportunisticBMD" and "masks/trabecular_L1.nii.gz" in marker["files"]
    assert _leftovers(out) == []


def test_a_second_run_leaves_nothing_of_the_first(crop, tmp_path):
    out = tmp_path / "out"
    # the models segment: labels and keypoints are written (exit 3 when they back no level: still written)
    assert _analyze(crop["ct"], out) in (0, 3)
    assert {"labels.nii.gz", "keypoints.json", "masks"} <= {p.name for p in out.iterdir()}
    assert _analyze(crop["ct"], out, "--seg", str(crop["seg"]), "--json-only") == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "results.json"]
    assert json.loads((out / MARKER_NAME).read_text())["files"] == ["results.json"]
    assert json.loads((out / "results.json").read_text())["input"]["labels"] == str(crop["seg"])
    # a folder an older obmd wrote (no marker: results.json and its file names only) is replaced the same way
    legacy = tmp_path / "legacy"
    (legacy / "masks").mkdir(parents=True)
    for name in ("results.json", "labels.nii.gz", "keypoints.json", "hip_left.png", "masks/trabecular_L3.nii.gz"):
        (legacy / name).write_text("{}")
    assert _analyze(crop["ct"], legacy, "--seg", str(crop["seg"]), "--json-only") == 0
    assert sorted(p.name for p in legacy.iterdir()) == [MARKER_NAME, "results.json"]
    assert _leftovers(out) == [] and _leftovers(legacy) == []


def test_a_folder_that_is_not_ours_is_refused(crop, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert _analyze(crop["ct"], foreign, "--seg", str(crop["seg"]), "--json-only") == 2
    assert "not an OpportunisticBMD output folder (it holds notes.txt)" in capsys.readouterr().err
    ours = tmp_path / "ours"
    assert _analyze(crop["ct"], ours, "--seg", str(crop["seg"]), "--json-only") == 0
    (ours / "my_measurements.txt").write_text("added by the user")  # never silently deleted
    before = _hashes(ours)
    assert _analyze(crop["ct"], ours, "--seg", str(crop["seg"]), "--json-only") == 2
    assert "(it holds my_measurements.txt)" in capsys.readouterr().err
    assert _hashes(ours) == before and (foreign / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _analyze(crop["ct"], empty, "--seg", str(crop["seg"]), "--json-only") == 0


def test_a_second_concurrent_run_is_refused(shared_data, crop, tmp_path, capsys):
    out = tmp_path / "out"
    first = _child(shared_data / "ct.nii.gz", shared_data / "ct_seg_total.nii.gz", out)  # ~5 s
    try:
        _wait_for(tmp_path / "out.obmd-lock", first)
        assert _analyze(crop["ct"], out, "--seg", str(crop["seg"]), "--json-only") == 2
        err = capsys.readouterr().err
        assert f"being written by another obmd run (pid {first.pid})" in err, err
    finally:
        assert first.wait(120) == 0, first.communicate()
    assert json.loads((out / "results.json").read_text())["input"]["ct"] == str(shared_data / "ct.nii.gz")
    assert _leftovers(out) == []


def test_a_stale_lock_is_taken_over(crop, tmp_path):
    out = tmp_path / "out"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    (tmp_path / "out.obmd-lock").write_text(f"{dead_pid}\n")  # a run killed before it could remove its lock
    (tmp_path / f"out.obmd-tmp-{dead_pid}").mkdir()  # and its half-written folder
    (tmp_path / f"out.obmd-tmp-{dead_pid}" / "results.json").write_text("{}")
    assert _analyze(crop["ct"], out, "--seg", str(crop["seg"]), "--json-only") == 0
    assert (out / "results.json").exists() and _leftovers(out) == []
    # a lock just created whose writer has not written its pid yet is not stale
    lock = tmp_path / "out.obmd-lock"
    lock.write_text("")
    with pytest.raises(InputError, match="being written by another obmd run"):
        acquire_lock(out, out)
    old_s = time.time() - 3600.0
    os.utime(lock, (old_s, old_s))
    assert acquire_lock(out, out) == lock and lock.read_text().split()[0] == str(os.getpid())
    lock.unlink()


def test_a_failed_or_interrupted_run_leaves_the_folder_untouched(shared_data, crop, tmp_path, capsys):
    out = tmp_path / "out"
    assert _analyze(crop["ct"], out, "--seg", str(crop["seg"])) == 0
    before = _hashes(out)
    assert _analyze(crop["ct"], out, "--seg", str(crop["muscle"])) == 2  # no vertebra: fails mid-run
    assert "no vertebra" in capsys.readouterr().err
    assert _hashes(out) == before and _leftovers(out) == []
    child = _child(shared_data / "ct.nii.gz", shared_data / "ct_seg_total.nii.gz", out)
    _wait_for(tmp_path / f"out.obmd-tmp-{child.pid}", child)
    child.send_signal(signal.SIGINT)  # Ctrl-C during the analysis
    _stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130 and "interrupted" in stderr, stderr
    assert _hashes(out) == before and _leftovers(out) == []


def test_check_output_target_accepts_new_and_empty_folders(tmp_path):
    assert check_output_target(tmp_path / "new" / "deeper", [tmp_path / "ct.nii.gz"]) == tmp_path / "new" / "deeper"
    with pytest.raises(InputError, match="filesystem root"):
        check_output_target(Path("/"))
