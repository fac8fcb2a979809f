"""``obmd batch``: small digital patients (with their labels, so no model runs) and a corrupt CT on a
2-worker LocalCluster, a killed run resumed, a real scheduler + 2 workers through --scheduler, and a DICOM
study tree whose CT series is chosen and recorded."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pydicom
import pytest
from pydicom.uid import generate_uid

from OpportunisticBMDLib import cli
from OpportunisticBMDLib.batch.case import CaseSettings, run_case
from OpportunisticBMDLib.batch.inputs import find_cases
from OpportunisticBMDLib.batch.resume import CASE_RECORD
from OpportunisticBMDLib.phantom import PhantomOptions, generate_phantom, write_phantom
from OpportunisticBMDLib.pipeline import AnalysisOptions

REPO = Path(__file__).resolve().parents[2]
DICOM_SERIES = REPO.parent / "shared" / "data" / "totalseg-example" / "dicom_upper_abdomen"
SEEDS = (1001, 1002, 1003, 1004)
SMALL = dict(region="spine", spacing_mm=(3.0, 3.0, 3.0), hip_truth=False)  # ~2 s to make, ~4 s to analyse
MEASURED = ("complete", "partial", "not_measurable")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _obmd(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "OpportunisticBMDLib.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def cohort_inputs(tmp_path_factory) -> dict:
    """Four digital patients and a truncated CT, listed in a manifest (the first with age and sex)."""
    root = tmp_path_factory.mktemp("batch-inputs")
    rows = []
    for n, seed in enumerate(SEEDS):
        paths = write_phantom(generate_phantom(seed, PhantomOptions(**SMALL)), root / f"p{seed}")
        extra = {"age": "70", "sex": "F"} if n == 0 else {"age": "", "sex": ""}
        rows.append({"id": f"p{seed}", "ct": str(paths["ct"]), "seg": str(paths["labels"]), **extra})
    corrupt = root / "broken" / "ct.nii.gz"
    corrupt.parent.mkdir()
    data = Path(rows[0]["ct"]).read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])  # a transfer cut short
    rows.append({"id": "broken", "ct": "broken/ct.nii.gz", "seg": "", "age": "", "sex": ""})  # relative to the CSV
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "ct", "seg", "age", "sex"])
        writer.writeheader()
        writer.writerows(rows)
    return {"root": root, "manifest": manifest, "rows": rows}


@pytest.fixture(scope="module")
def local_run(cohort_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batch-out") / "cohort"
    proc = _obmd("batch", str(cohort_inputs["manifest"]), "--out", str(out), "--workers", "2", "--quiet")
    assert "2 worker(s) x 1 thread(s)" in proc.stdout and "dashboard:" in proc.stdout
    return out


def test_local_cluster_cohort_isolates_the_corrupt_case_and_matches_obmd_analyze(local_run, cohort_inputs, tmp_path):
    rows = {r["id"]: r for r in _rows(local_run / "cohort.csv")}
    assert list(rows) == [r["id"] for r in cohort_inputs["rows"]]  # one row per case, in input order
    broken = rows.pop("broken")
    assert broken["status"] == "failed" and "truncated" in broken["reason"] and broken["summary_vbmd_mg_cm3"] == ""
    for case_id, row in rows.items():
        results = json.loads((local_run / "cases" / case_id / "results.json").read_text())
        assert row["status"] == results["status"] and row["status"] in MEASURED
        summary = results["spine"]["summary"]
        assert row["summary_category"] == (summary.get("category") or "")  # only where results.json has one
        assert float(row["L1_vbmd_mg_cm3"]) == pytest.approx(results["spine"]["levels"]["L1"]["vbmd_mg_cm3"])
    assert rows["p1001"]["age"] == "70.0" and rows["p1001"]["sex"] == "F"  # the manifest's age and sex were used
    # the same case through `obmd analyze` gives the same results.json, byte for byte
    first = cohort_inputs["rows"][0]
    single = tmp_path / "single"
    assert cli.main(["analyze", first["ct"], "--seg", first["seg"], "--age", "70", "--sex", "F", "--out", str(single),
                     "--quiet"]) == 0
    assert (single / "results.json").read_text() == (local_run / "cases" / "p1001" / "results.json").read_text()
    # the other outputs: parquet with the same rows, screening = the osteopenia/osteoporosis cases, figures
    import pyarrow.parquet as pq

    table = pq.read_table(local_run / "cohort.parquet").to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in cohort_inputs["rows"]]
    assert table[0]["summary_vbmd_mg_cm3"] == pytest.approx(float(rows["p1001"]["summary_vbmd_mg_cm3"]))
    screened = {r["id"] for r in _rows(local_run / "screening.csv")}
    assert screened == {i for i, r in rows.items() if r["summary_category"] in ("osteoporosis", "osteopenia")}
    for name in ("cohort.png", "cohort.pdf"):
        assert (local_run / name).stat().st_size > 10_000
    run = json.loads((local_run / "batch.json").read_text())
    assert run["counts"]["failed"] == 1 and sum(run["counts"].values()) == len(SEEDS) + 1
    assert len({r["pid"] for r in run["cases"] if r["case_id"] != "broken"}) == 2  # both worker processes worked


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the batch process and the worker processes it started, each by its pid."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=30)


def test_killed_run_resumes_without_redoing_finished_cases(local_run, cohort_inputs, tmp_path):
    out = tmp_path / "cohort"
    cmd = [sys.executable, "-m", "OpportunisticBMDLib.cli", "batch", str(cohort_inputs["manifest"]), "--out", str(out),
           "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 180
        while not list((out / "cases").glob(f"*/{CASE_RECORD}")):
            assert proc.poll() is None, "the batch ended before it could be interrupted"
            assert time.monotonic() < deadline, "no case finished in time"
            time.sleep(0.2)
    finally:
        _kill_tree(proc)
    assert not (out / "cohort.csv").exists()
    done = {p.parent.name: {f: f.stat().st_mtime_ns for f in p.parent.rglob("*") if f.is_file()}
            for p in (out / "cases").glob(f"*/{CASE_RECORD}")}
    assert 1 <= len(done) < len(SEEDS)
    _obmd("batch", str(cohort_inputs["manifest"]), "--out", str(out), "--workers", "2", "--resume", "--quiet")
    for case_id, files in done.items():  # finished cases untouched: the same files, the same modification times
        assert {f for f in (out / "cases" / case_id).rglob("*") if f.is_file()} == set(files)
        for path, mtime in files.items():
            assert path.stat().st_mtime_ns == mtime, path
    run = json.loads((out / "batch.json").read_text())
    assert {r["case_id"] for r in run["cases"] if r.get("resumed")} == set(done)
    assert not [p for p in (out / "cases").iterdir() if ".obmd-" in p.name]  # no staging folder or lock left
    assert _without_seconds(_rows(out / "cohort.csv")) == _without_seconds(_rows(local_run / "cohort.csv"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_existing_scheduler_and_two_workers(cohort_inputs, tmp_path):
    dask = Path(sys.executable).with_name("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()
    started: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = (logs / f"{name}.log").open("w")
        started.append(subprocess.Popen([str(dask), *args], stdout=log, stderr=subprocess.STDOUT, env=ENV,
                                        cwd=tmp_path))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        for name in ("w1", "w2"):
            start(name, "worker", address, "--nthreads", "1", "--nworkers", "1", "--name", name, "--no-dashboard",
                  "--host", "127.0.0.1")
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        manifest = tmp_path / "two.csv"
        rows = cohort_inputs["rows"][:2]
        with manifest.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        out = tmp_path / "remote"
        proc = _obmd("batch", str(manifest), "--out", str(out), "--scheduler", address, "--quiet")
        assert f"Dask scheduler {address}: 2 worker(s)" in proc.stdout
        run = json.loads((out / "batch.json").read_text())
        statuses = [json.loads((out / "cases" / r["id"] / "results.json").read_text())["status"] for r in rows]
        assert [r["status"] for r in run["cases"]] == statuses
        ours = {p.pid for proc_ in started for p in psutil.Process(proc_.pid).children(recursive=True)}
        assert {r["pid"] for r in run["cases"]} <= ours  # the cases ran in the workers the test started
    finally:
        for proc_ in reversed(started):  # workers first, then the scheduler; each by its pid
            children = psutil.Process(proc_.pid).children(recursive=True) if proc_.poll() is None else []
            proc_.terminate()
            try:
                proc_.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc_.kill()
            for child in children:
                if child.is_running():
                    child.kill()


def _write_series(folder: Path, study_uid: str, files: list[Path], **changes) -> str:
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    for idx, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(folder / f"IM{idx:04d}")
    return series_uid


@pytest.mark.skipif(not DICOM_SERIES.is_dir(), reason="shared DICOM series not present")
def test_dicom_tree_study_chooses_the_soft_tissue_series_and_records_it(tmp_path):
    files = sorted((DICOM_SERIES / "series").iterdir())
    study = tmp_path / "archive" / "patient1" / "study1"
    study_uid = generate_uid()
    bone = _write_series(study / "s2", study_uid, files, SeriesNumber=2, ConvolutionKernel="Br64f")
    soft = _write_series(study / "s3", study_uid, files[::-1], SeriesNumber=3)  # file order reversed on purpose
    scout = _write_series(study / "s1", study_uid, files[:1], SeriesNumber=1,
                          ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    _write_series(tmp_path / "archive" / "patient2" / "scout-only", generate_uid(), files[:1],
                  ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    cases = {c.case_id: c for c in find_cases([tmp_path / "archive"])}
    assert set(cases) == {"patient1__study1__s3", "patient2__scout-only"}
    chosen = cases["patient1__study1__s3"]
    assert chosen.series_choice["series_instance_uid"] == soft and len(chosen.dicom_files) == len(files)
    assert {s["series_instance_uid"] for s in chosen.series_choice["skipped"]} == {bone, scout}
    assert "no axial CT image series" in cases["patient2__scout-only"].problem
    # the tree's study through a manifest with its labels (fast: no model), next to the study with no CT series
    manifest = tmp_path / "dicom.csv"
    manifest.write_text(f"id,ct,seg\nstudy1,{study},{DICOM_SERIES / 'ct_seg_total.nii.gz'}\n")
    out = tmp_path / "out"
    _obmd("batch", str(manifest), str(tmp_path / "archive" / "patient2"), "--out", str(out), "--workers", "1",
          "--quiet")
    rows = {r["id"]: r for r in _rows(out / "cohort.csv")}
    assert rows["study1"]["status"] in MEASURED and soft in rows["study1"]["series"]
    results = json.loads((out / "cases" / "study1" / "results.json").read_text())
    assert results["input"]["series_choice"]["series_instance_uid"] == soft
    assert rows["scout-only"]["status"] == "failed" and "no axial CT image series" in rows["scout-only"]["reason"]


def test_a_missing_input_file_is_a_failed_record_not_an_exception(tmp_path):
    (tmp_path / "gone").mkdir()
    shutil.copy(__file__, tmp_path / "gone" / "ct.nii.gz")  # exists when found, removed before the case runs
    (case,) = find_cases([tmp_path / "gone"])
    (tmp_path / "gone" / "ct.nii.gz").unlink()
    record = run_case(case, CaseSettings(options=AnalysisOptions(), out_dir=str(tmp_path / "out"),
                                         run_dir=str(tmp_path / "run")))
    assert record["status"] == "failed" and "ct.nii.gz" in record["reason"] and record["error"] == "InputError"


def test_a_case_over_its_time_limit_is_recorded_as_timed_out(cohort_inputs, tmp_path):
    """The worker's watchdog ends the worker process; the nanny starts another, the retried task finds the
    time-out record: the case is timed_out, nothing half-written stays, the next case still runs."""
    first, broken = cohort_inputs["rows"][0], cohort_inputs["rows"][-1]
    manifest = tmp_path / "slow.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(first))
        writer.writeheader()
        writer.writerows([first, {**broken, "ct": str(cohort_inputs["root"] / broken["ct"])}])
    out = tmp_path / "out"
    proc = _obmd("batch", str(manifest), "--out", str(out), "--workers", "1", "--time-limit-s", "0.5", "--quiet")
    rows = {r["id"]: r for r in _rows(out / "cohort.csv")}
    assert rows["p1001"]["status"] == "timed_out" and "0.5 s time limit" in rows["p1001"]["reason"]
    assert rows["broken"]["status"] == "failed"  # (fails in well under the limit)
    assert "timed_out: p1001" in proc.stdout
    assert not (out / "cases" / "p1001").exists() and not [p for p in (out / "cases").iterdir() if ".obmd-" in p.name]
    assert not [p for p in out.iterdir() if p.name.startswith(".run-")]


def test_bench_batch_figures_from_known_runs():
    """Scaling efficiency and overhead from hand-made runs: 6 cases in 60 s on 1 worker (6/min), in 36 s on 2
    (10/min) -> efficiency 10 / 12; 1-worker gaps 10 - 9 = 1 s per case, extra CPU 8.5 - 8.0 = 0.5 s."""
    from OpportunisticBMDLib.benchmarks.batch import summarise

    def run(workers, cases_s, in_worker_s, cpu_s):
        return {"workers": workers, "n": 6, "cases_s": cases_s, "cases_per_min": 60.0 * 6 / cases_s,
                "seconds_per_case_in_worker": in_worker_s, "cpu_s_per_case_in_worker": cpu_s}

    figures = summarise([run(1, 60.0, 9.0, 8.5), run(2, 36.0, 11.0, 8.6)], [8.5] * 6, [8.0] * 6)
    assert figures["scaling_efficiency"] == pytest.approx(10.0 / 12.0, abs=1e-3) and figures["scaling_met"]
    assert figures["scheduling_gap_s_per_case"] == pytest.approx(1.0)
    assert figures["extra_cpu_s_per_case"] == pytest.approx(0.5)
    assert figures["overhead_s_per_case"] == pytest.approx(1.5) and not figures["overhead_met"]
    assert figures["wall_difference_s_per_case"] == pytest.approx(1.5)


@pytest.mark.skipif(not DICOM_SERIES.is_dir(), reason="shared DICOM series not present")
def test_headers_read_in_chunks_merge_into_the_same_series():
    """A large tree's headers are read in chunks on the workers; a series cut between two chunks is whole again."""
    from OpportunisticBMDLib.batch.inputs import merge_series, scan_series

    files = sorted(str(p) for p in (DICOM_SERIES / "series").iterdir())
    (whole,) = scan_series(files)
    (merged,) = merge_series([scan_series(files[:7]), scan_series(files[7:])])
    assert merged == whole and merged.n_images == len(files)


def test_output_folder_inside_the_inputs_or_foreign_is_refused_before_anything_runs(cohort_inputs, tmp_path, capsys):
    inside = cohort_inputs["root"] / "results"
    assert cli.main(["batch", str(cohort_inputs["root"]), "--out", str(inside)]) == 2
    assert "inside the input" in capsys.readouterr().err and not inside.exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli.main(["batch", str(cohort_inputs["manifest"]), "--out", str(foreign)]) == 2
    assert "not an obmd batch folder" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("age", ["250", "-3", "0"])
def test_a_manifest_age_outside_the_plausible_range_is_a_usage_error(tmp_path, age):
    """As --age: an impossible age would silently move vBMD (the age-typical marrow fat), so it is refused."""
    from OpportunisticBMDLib.errors import InputError

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,ct,age,sex\na,a.nii.gz,{age},F\n")
    with pytest.raises(InputError, match=f"age '{age}'"):
        find_cases([manifest])


def test_cohort_category_bars_are_ordered_and_long_failure_labels_wrapped(tmp_path):
    """Category bars best to worst, then not measurable and failed (timed out counts as failed), whatever the
    rows' order; a long failure reason is wrapped to two lines and cut, the figure still written."""
    from OpportunisticBMDLib.batch.cohort import LABEL_WIDTH_CHARS, bar_label, category_counts, plot_cohort

    rows = [{"status": "failed", "reason": "x"}, {"status": "complete", "summary_category": "osteoporosis"},
            {"status": "not_measurable"}, {"status": "partial", "summary_category": "normal"},
            {"status": "timed_out", "reason": "y"}, {"status": "complete", "summary_category": "osteopenia"},
            {"status": "complete", "summary_category": "normal"}]
    assert list(category_counts(rows).items()) == [("normal", 2), ("osteopenia", 1), ("osteoporosis", 1),
                                                   ("not measurable", 1), ("failed", 2)]
    long = "failed: DICOM slices are unevenly spaced (2.00-38.00 mm): missing slices or a gantry-tilted series " * 2
    label = bar_label(long)
    assert label.count("\n") == 1 and label.endswith("…")
    assert all(len(line) <= LABEL_WIDTH_CHARS for line in label.splitlines())
    assert bar_label("timed_out: over the 600 s time limit") == "timed_out: over the 600 s time limit"
    assert [p.name for p in plot_cohort(rows, tmp_path)] == ["cohort.png", "cohort.pdf"]


def test_a_usage_error_leaves_no_batch_folder(tmp_path, capsys):
    """Missing input, a malformed manifest, no cases: exit 2, DIR neither created nor marked."""
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("path,age\nx.nii.gz,60\n")
    for inputs, message in (([str(tmp_path / "gone.nii.gz")], "no such file"), ([str(bad)], "needs a 'ct' column"),
                            ([str(empty)], "no cases found")):
        out = tmp_path / "out"
        assert cli.main(["batch", *inputs, "--out", str(out), "--workers", "1", "--quiet"]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists() and not (tmp_path / "out.obmd-lock").exists()
