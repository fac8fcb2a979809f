"""Regenerate docs/screenshots/web-*.png (the README's pictures of the browser app).

Run: ``.venv/bin/python Testing/web_screenshots.py`` (needs chromium, like the browser tests).
A digital patient is analysed, then the psoas (muscle) ROI is partly erased with the segment editor.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image
from web_harness import ARTIFACTS, REPO, browser_page, chromium_or_skip, obmd_web

OUT = REPO / "docs" / "screenshots"


def _save(page, name: str, tmp: Path) -> None:
    raw = tmp / f"{name}-raw.png"
    page.screenshot(path=raw)
    # 256-colour palette: small files, ROI colours kept.
    image = Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    image.save(OUT / f"{name}.png", optimize=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="obmd-shots-"))
    args = ["--phantom-seed", "3", "--no-analyze", "--out", str(tmp / "out"), "--dataset", str(tmp / "ds")]
    with obmd_web(args, ARTIFACTS / "shots" / "server.log") as url, browser_page(chromium_or_skip(), 1440, 860) as page:
        page.goto(url)
        page.locator('[data-testid="analyze"]').click()
        page.locator('[data-testid="level-row"]').first.wait_for(state="visible", timeout=300_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=analyze]').disabled")
        page.wait_for_timeout(10_000)  # CPU rendering of the new surfaces
        _save(page, "web-analyzed", tmp)
        page.locator('[data-testid="edit-muscle_roi"]').click()
        page.wait_for_timeout(1500)
        page.locator("button:has(.mdi-eraser)").first.click()
        page.wait_for_timeout(1000)
        page.locator(".v-navigation-drawer .v-slider-thumb").first.focus()
        page.keyboard.press("End")
        from test_web_browser import _largest_view_box

        box = _largest_view_box(page)
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx + 0.05 * box["width"], cy)
        page.mouse.down()
        for step in range(12):  # erase the patient's left psoas (screen right)
            page.mouse.move(cx + 0.05 * box["width"] + step * 0.02 * box["width"], cy)
            page.wait_for_timeout(40)
        page.mouse.up()
        page.locator('[data-testid="stale"]').wait_for(state="visible", timeout=30_000)
        page.mouse.move(cx + 0.2 * box["width"], cy - 0.2 * box["height"])
        page.wait_for_timeout(2500)
        _save(page, "web-editing", tmp)
    print(f"wrote {OUT}/web-analyzed.png and web-editing.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
