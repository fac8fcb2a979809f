"""Browser tests of ``obmd web``: real server, real Debian chromium, the whole edit → recompute loop.

The page is driven as a user would: Analyze, read the table, pick the muscle ROI, erase part of it
with the segment editor's Erase brush dragged across the axial view, Recompute, check that the
calibrated values moved as the calibration formula says, Save report, Export training case.
Screenshots land in Testing/artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import math
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from web_harness import ARTIFACTS, browser_page, chromium_or_skip, obmd_web, read_table

from OpportunisticBMDLib.validity import category_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ANALYZE_TIMEOUT_MS = 240_000


def _run_edit_recompute_export(page, url: str, out_dir: Path, tag: str) -> dict:
    shots = ARTIFACTS / tag
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(url)
    analyze = page.locator('[data-testid="analyze"]')
    analyze.wait_for(state="visible")
    page.wait_for_function("() => !document.querySelector('[data-testid=analyze]').disabled")
    page.screenshot(path=shots / "01-loaded.png")

    analyze.click()
    page.locator('[data-testid="level-row"]').first.wait_for(state="visible", timeout=ANALYZE_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('[data-testid=analyze]').disabled")
    page.wait_for_timeout(1500)  # let the views render the new segments for the screenshot
    before = read_table(page)
    page.screenshot(path=shots / "02-analyzed.png")
    assert before["levels"], "no vertebral level in the table"
    assert math.isfinite(before["summary_vbmd"]), before
    muscle_before = float(before["calibration"]["muscle_hu"])

    # Pick the muscle ROI: the app centres the slice views on it and opens the segment editor.
    page.locator('[data-testid="edit-muscle_roi"]').click()
    page.locator(".mdi-eraser").first.wait_for(state="visible")
    page.locator("button:has(.mdi-eraser)").first.click()
    # Biggest brush (a sphere: erases through neighbouring slices too).
    thumb = page.locator(".v-navigation-drawer .v-slider-thumb").first
    thumb.focus()
    page.keyboard.press("End")
    page.wait_for_timeout(500)
    box = _largest_view_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 0.35 * box["width"], cy)
    page.mouse.down()
    for step in range(1, 31):  # bounded drag across the view centre, through the muscle ROI
        page.mouse.move(cx - 0.35 * box["width"] + step * 0.7 * box["width"] / 30, cy)
        page.wait_for_timeout(40)
    page.mouse.up()
    page.locator('[data-testid="stale"]').wait_for(state="visible", timeout=30_000)
    page.screenshot(path=shots / "03-erased.png")

    page.locator('[data-testid="recompute"]').click()
    page.locator('[data-testid="stale"]').wait_for(state="detached", timeout=60_000)
    after = read_table(page)
    page.screenshot(path=shots / "04-recomputed.png")

    muscle_after = float(after["calibration"]["muscle_hu"])
    fat_before, fat_after = float(before["calibration"]["fat_hu"]), float(after["calibration"]["fat_hu"])
    assert muscle_after != pytest.approx(muscle_before, abs=1e-3), "erasing muscle voxels left muscle HU unchanged"
    assert fat_after == pytest.approx(fat_before, abs=1e-6), "the fat ROI was not edited"
    slope, intercept = float(after["calibration"]["slope"]), float(after["calibration"]["intercept"])
    for level, row in after["levels"].items():
        # Trabecular ROIs untouched: same HU; the new vBMD is the new calibration line at that HU.
        assert row["hu"] == pytest.approx(before["levels"][level]["hu"], abs=1e-6)
        assert row["vbmd"] == pytest.approx(slope * row["hu"] + intercept, abs=0.05), level
        # Two-point calibration: muscle HU up moves every level above fat HU down, and vice versa.
        if row["hu"] > fat_after:
            change = row["vbmd"] - before["levels"][level]["vbmd"]
            assert np.sign(change) == -np.sign(muscle_after - muscle_before), (level, change)

    page.locator('[data-testid="save-report"]').click()
    page.locator('[data-testid="last-report"]').wait_for(state="visible", timeout=60_000)
    report_dir = Path(page.locator('[data-testid="last-report"]').inner_text().split(":", 1)[1].strip())
    saved = json.loads((report_dir / "results.json").read_text())
    assert saved["calibration"]["muscle_hu"] == pytest.approx(muscle_after, abs=1e-6)
    assert saved["spine"]["summary"]["vbmd_mg_cm3"] == pytest.approx(after["summary_vbmd"], abs=1e-6)
    _check_downloads(page, saved, report_dir, out_dir)
    page.screenshot(path=shots / "04b-saved-downloaded.png")

    page.locator('[data-testid="export"]').click()
    page.locator('[data-testid="last-export"]').wait_for(state="visible", timeout=60_000)
    page.screenshot(path=shots / "05-exported.png")
    return {"before": before, "after": after, "report_dir": report_dir}


def _check_downloads(page, saved: dict, report_dir: Path, out_dir: Path) -> None:
    """The hips' pictures are on the page; Download PDF and Download report (zip) hand the saved report to the
    browser (real downloads, through the app's own route), with the numbers the page shows."""
    assert page.locator('[data-testid="hip-picture"]').count() == sum(
        1 for block in (saved.get("hip") or {}).values() if isinstance(block, dict) and block.get("neck"))
    with page.expect_download(timeout=60_000) as info:
        page.locator('[data-testid="download-pdf"]').click()
    pdf = out_dir / "downloaded.pdf"
    info.value.save_as(pdf)
    assert info.value.suggested_filename == f"{report_dir.name}.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes() == (report_dir / "report.pdf").read_bytes()
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())
    summary = saved["spine"]["summary"]
    assert f"{summary['vbmd_mg_cm3']:.1f}" in text and f"ACR category: {category_text(summary)}" in text
    with page.expect_download(timeout=60_000) as info:
        page.locator('[data-testid="download-zip"]').click()
    archive = out_dir / "downloaded.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert {f"{report_dir.name}/report.pdf", f"{report_dir.name}/results.json"} <= names
        assert json.loads(z.read(f"{report_dir.name}/results.json")) == saved


def _largest_view_box(page) -> dict:
    """Bounding box of the biggest remote-rendered view (the axial view in the default layout)."""
    boxes = []
    for element in page.locator("img, canvas").all():
        box = element.bounding_box()
        if box and box["width"] > 200 and box["height"] > 200:
            boxes.append(box)
    assert boxes, "no rendered view found on the page"
    return max(boxes, key=lambda b: b["width"] * b["height"])


def _check_dataset(dataset: Path, ct_shape_xyz: tuple[int, ...]) -> None:
    import SimpleITK as sitk

    data = json.loads((dataset / "dataset.json").read_text())
    assert data["numTraining"] == 1 and data["channel_names"] == {"0": "CT"}
    images = sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))
    labels = sorted((dataset / "labelsTr").glob("*.nii.gz"))
    assert len(images) == 1 and len(labels) == 1
    assert labels[0].name.replace(".nii.gz", "_0000.nii.gz") == images[0].name
    label_image = sitk.ReadImage(str(labels[0]))
    assert label_image.GetSize() == sitk.ReadImage(str(images[0])).GetSize() == ct_shape_xyz
    values = set(np.unique(sitk.GetArrayFromImage(label_image)).tolist())
    assert {1, 2} & values or {3, 4, 5} & values, f"no vertebra label exported: {sorted(values)}"


def test_web_real_ct_edit_recompute_export(shared_data: Path, tmp_path: Path) -> None:
    """The shared real CT with its TotalSegmentator labels (no models needed)."""
    chromium = chromium_or_skip()
    dataset = tmp_path / "nnUNet_raw" / "Dataset901_OBMD"
    args = [str(shared_data / "ct.nii.gz"), "--labels", str(shared_data / "ct_seg_total.nii.gz"),
            "--out", str(tmp_path / "reports"), "--dataset", str(dataset)]
    with obmd_web(args, ARTIFACTS / "real-ct" / "server.log") as url, browser_page(chromium) as page:
        _run_edit_recompute_export(page, url, tmp_path, "real-ct")
    import SimpleITK as sitk

    _check_dataset(dataset, sitk.ReadImage(str(shared_data / "ct.nii.gz")).GetSize())


def test_web_digital_patient_edit_recompute_export(tmp_path: Path) -> None:
    """A generated digital patient (what ``obmd web`` opens without a CT), its true labels given."""
    chromium = chromium_or_skip()
    dataset = tmp_path / "nnUNet_raw" / "Dataset901_OBMD"
    args = ["--phantom-seed", "3", "--phantom-spacing", "3", "--no-analyze", "--out", str(tmp_path / "reports"),
            "--dataset", str(dataset)]
    with obmd_web(args, ARTIFACTS / "digital-patient" / "server.log") as url, browser_page(chromium) as page:
        result = _run_edit_recompute_export(page, url, tmp_path, "digital-patient")
        # the muscle ROI was erased: the case says it is edited
        assert page.locator('[data-testid="case-name"]').inner_text().strip() == "digital-patient-003 (edited)"
        # The page's own "new digital patient" button: next seed, results cleared, ready to analyze.
        page.locator('[data-testid="digital-patient"]').click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=case-name]')?.innerText.includes('digital-patient-004')",
            timeout=120_000,
        )
        assert page.locator('[data-testid="level-row"]').count() == 0
        assert "(edited)" not in page.locator('[data-testid="case-name"]').inner_text()
        page.wait_for_function("() => !document.querySelector('[data-testid=analyze]').disabled")
    image = sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))[0]
    import SimpleITK as sitk

    _check_dataset(dataset, sitk.ReadImage(str(image)).GetSize())
    assert set(result["after"]["levels"]) >= {"L1", "L2"}
