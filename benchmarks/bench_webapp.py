"""Web app: time from a slice-slider move in the browser to the new picture of that slice view.

Starts ``edgefusion app`` as a user does, opens it in Debian's Chromium (Playwright), uploads a
synthetic 256x256-slice MRI/CT pair, fuses it (pixel-average: the worker is not what is timed)
and then moves the Red view's slice slider with the keyboard, one step at a time. Each move is
timed in the page, from the key press to the ``load`` event of the view's next picture (the
server reslices both layers, blends, renders offscreen, encodes JPEG; the relay and the browser
decode it). Prints the median and 90th percentile.

    .venv/bin/python benchmarks/bench_webapp.py [--moves 30]
"""

from __future__ import annotations

import argparse
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SLICE_SIZE = 256
SLICES = 48
VIEWPORT = {"width": 1400, "height": 820}

#: Arms ``window.efTiming``: a promise of the milliseconds from the next key press to the next picture of view ``index``.
TIME_NEXT_PICTURE = """(index) => {
    const img = document.querySelectorAll('[data-testid=views] img')[index];
    let start = null;
    document.addEventListener('keydown', () => { start = performance.now(); }, {capture: true, once: true});
    window.efTiming = new Promise((resolve) => {
        img.addEventListener('load', () => resolve(performance.now() - start), {once: true});
    });
}"""


def synthetic_pair(folder: Path) -> tuple[Path, Path]:
    """An MRI-like and a CT-like volume of SLICES x 256 x 256 voxels (1 x 1 x 2 mm), written as NRRD."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:SLICES, 0:SLICE_SIZE, 0:SLICE_SIZE].astype(np.float32)
    r = ((x - 127.5) / 100) ** 2 + ((y - 127.5) / 115) ** 2 + ((z - SLICES / 2) / (SLICES / 2)) ** 2
    mri = np.where(r < 1, 600 + 300 * np.cos(x / 9) * np.sin(y / 11), 0) + 20 * rng.standard_normal(r.shape)
    ct = np.where((r < 1) & (r > 0.85), 1200, np.where(r < 0.85, 40, -1000)) + 10 * rng.standard_normal(r.shape)
    paths = []
    for name, array, kind in (("bench-mri.nrrd", mri, np.float32), ("bench-ct.nrrd", ct, np.int16)):
        image = sitk.GetImageFromArray(array.astype(kind))
        image.SetSpacing((1.0, 1.0, 2.0))
        sitk.WriteImage(image, str(folder / name))
        paths.append(folder / name)
    return tuple(paths)


def start_app() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", "import sys; from EdgeFusionLib.cli import main; sys.exit(main())",
                                "app", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return process, lines.get(timeout=120).split(": ", 1)[1].strip()


def wait_for(page, expression: str, timeout_s: float = 300) -> None:
    page.wait_for_function(expression, timeout=timeout_s * 1000, polling=200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=30)
    arguments = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("Chromium is needed: apt-get install chromium")
    process, url = start_app()
    try:
        with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
            mri, ct = synthetic_pair(Path(folder))
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url, timeout=300_000)
            wait_for(page, "window.trame && window.trame.state && window.trame.state.get('ef_apply_text') === 'Apply'")
            page.locator("[data-testid=upload] input[type=file]").set_input_files([str(mri), str(ct)])
            wait_for(page, "window.trame.state.get('ef_volume_items').length === 2")
            page.evaluate("() => { const s = window.trame.state; s.set('ef_mri_id', s.get('ef_volume_items')[0].value); "
                          "s.set('ef_other_id', s.get('ef_volume_items')[1].value); s.set('ef_modality', 'CT'); "
                          "s.set('ef_rule', 'pixel-average'); }")
            wait_for(page, "window.trame.state.get('ef_apply_enabled') === true")
            page.get_by_test_id("apply").click()
            wait_for(page, "/ made in /.test(window.trame.state.get('ef_status'))")
            time.sleep(2)
            size = page.evaluate("() => { const i = document.querySelectorAll('[data-testid=views] img')[0]; "
                                 "return [i.naturalWidth, i.naturalHeight]; }")
            page.locator("[data-testid=views] img").first.hover()  # the view renders at its focus rate, as under a user's hand
            thumb = page.locator("[data-testid=views] .slice-slider .v-slider-thumb").first
            thumb.focus()
            latencies = []
            for move in range(arguments.moves + 3):  # the first 3 warm up
                page.evaluate(TIME_NEXT_PICTURE, 0)
                page.keyboard.press("ArrowRight" if (move // 10) % 2 == 0 else "ArrowLeft")
                milliseconds = page.evaluate("() => window.efTiming")
                if move >= 3:
                    latencies.append(milliseconds)
                time.sleep(1.0)  # let the still (quality 90) picture of this move arrive before the next move
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=60)
    latencies.sort()
    p90 = latencies[int(0.9 * (len(latencies) - 1))]
    print(f"slices {SLICE_SIZE}x{SLICE_SIZE} (x{SLICES}), view picture {size[0]}x{size[1]} px, {len(latencies)} moves")
    print(f"slider move -> new picture: median {statistics.median(latencies):.0f} ms, p90 {p90:.0f} ms, "
          f"min {latencies[0]:.0f} ms, max {latencies[-1]:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
