"""The web app in a real browser: Debian's Chromium driven by Playwright.

Two set-ups:

* ``edgefusion app`` as a user starts it (a subprocess): the token, one scene per browser
  session, bad uploads, Cancel, and a download compared with ``edgefusion fuse``;
* one session served from this process (a thread), so that the picture a slice view shows in
  the page can be compared with the image Slicer's slice logic blends on the server.

The pictures are read from the page itself: the view's <img> is drawn onto a canvas and its
pixels read back, at the picture's own resolution.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
pytest.importorskip("trame_slicer", reason="the web app's packages are not installed (pip install -e '.[app]')")
slicer = pytest.importorskip("slicer", reason="Slicer's MRML libraries are not installed")

from edgefusion_slicer_support import REPO, blended_slice_image  # noqa: E402
from test_webapp_uploads import dicom_series_zip  # noqa: E402

#: Where the browser's screenshots go: a temporary folder, so that tests never change the checkout;
#: `EDGEFUSION_SCREENSHOTS=Screenshots pytest Testing/test_webapp.py` refreshes the ones in the repository.
SCREENSHOTS = Path(os.environ.get("EDGEFUSION_SCREENSHOTS") or tempfile.mkdtemp(prefix="edgefusion-screenshots-"))
TOKEN = "test-token-for-the-browser-tests"
#: Seconds to wait for a session to start, a fusion to end, a picture to change (2 shared cores).
SLOW = 180
VIEWPORT = {"width": 1400, "height": 820}

#: Reads the picture of the n-th slice view (0: Red, 1: Yellow, 2: Green) from the page, as RGB rows top-down.
READ_VIEW_PICTURE = """(index) => {
    const img = document.querySelectorAll('[data-testid=views] img')[index];
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    return {width: canvas.width, height: canvas.height,
            pixels: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)};
}"""


def view_picture(page, index: int = 0) -> np.ndarray:
    picture = page.evaluate(READ_VIEW_PICTURE, index)
    return np.array(picture["pixels"], dtype=np.uint8).reshape(picture["height"], picture["width"], 4)[..., :3]


def state(page, name: str):
    return page.evaluate("(name) => window.trame.state.get(name)", name)


def wait_for_state(page, name: str, accept, timeout: float = SLOW):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = state(page, name)
            if accept(value):
                return value
        except sync_api.Error:  # the page is still connecting
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not reach the expected value; last: {value!r}")


RUN_END = re.compile(r"('.*' made in |Cancelled|Failed)")


def wait_for_run_end(page) -> str:
    """The status line once a run has ended (each test has a fresh session: no earlier run's line)."""
    return wait_for_state(page, "ef_status", lambda text: bool(RUN_END.match(text or "")))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """``edgefusion app`` started as a user starts it, on a free loopback port; its folders are checked at the end."""
    temporary = tmp_path_factory.mktemp("server-tmp")
    port = free_port()
    command = [sys.executable, "-c", "import sys; from EdgeFusionLib.cli import main; sys.exit(main())",
               "app", "--port", str(port), "--token", TOKEN, "--max-upload-mb", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                               env={**os.environ, "TMPDIR": str(temporary)})
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=60)
        assert first.startswith("EdgeFusion web app: http://127.0.0.1:"), first
        (folder,) = temporary.iterdir()
        assert folder.name.startswith("EdgeFusionApp-") and folder.stat().st_mode & 0o777 == 0o700
        yield first.split(": ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=60)
    # Uploads, jobs and downloads of every session went with the server.
    assert list(temporary.iterdir()) == []


def open_session(browser, url):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.goto(url, timeout=SLOW * 1000)
    wait_for_state(page, "ef_apply_text", lambda text: text == "Apply")
    return page


def load_sample(page, sample: str = "MRI + CT phantom"):
    page.evaluate("(sample) => window.trame.state.set('ef_sample', sample)", sample)
    page.get_by_test_id("load-sample").click()
    wait_for_state(page, "ef_apply_enabled", bool)


def choose_rule(page, rule: str) -> None:
    page.evaluate("(rule) => window.trame.state.set('ef_rule', rule)", rule)
    wait_for_state(page, "ef_rule", lambda value: value == rule)


# ---------------------------------------------------------------- the server as users start it


def test_every_request_needs_the_token(server_url):
    base = server_url.split("?")[0]
    for url in (base, base + "?token=wrong", base + "s/any-session/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=30)
        assert refused.value.code == 403


def test_browser_sessions_do_not_see_each_others_volumes(browser, server_url):
    first = open_session(browser, server_url)
    load_sample(first)
    names = [item["title"] for item in state(first, "ef_volume_items")]
    assert names == ["EdgeFusionPhantom-MRI", "EdgeFusionPhantom-CT"]

    second = open_session(browser, server_url)
    assert second.url != first.url and state(second, "ef_volume_items") == []
    # The second browser, with the server's token, opens the first session's address: its key is missing.
    second.goto(first.url.split("?")[0], timeout=SLOW * 1000)
    time.sleep(5)
    with pytest.raises(sync_api.Error):
        second.evaluate("() => window.trame.state.get('ef_volume_items').length")
    assert "EdgeFusionPhantom" not in second.content()
    first.context.close()
    second.context.close()


def test_bad_uploads_get_a_clear_message_and_no_node(browser, server_url, tmp_path):
    import SimpleITK as sitk

    (tmp_path / "notes.nrrd").write_text("this is not an image", encoding="utf-8")
    sitk.WriteImage(sitk.Image([8, 8, 4, 3], sitk.sitkFloat32), str(tmp_path / "series.nii.gz"))
    labels = np.zeros((6, 16, 16), np.uint8)
    labels[2:4, 4:12, 4:12] = 3
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "segmentation.nrrd"))
    (tmp_path / "report.txt").write_text("text", encoding="utf-8")
    expected = {"notes.nrrd": "is not an image", "series.nii.gz": "4D image", "segmentation.nrrd": "label map",
                "report.txt": "is not a volume file"}

    page = open_session(browser, server_url)
    for name, message in expected.items():
        page.locator("[data-testid=upload] input[type=file]").set_input_files(str(tmp_path / name))
        shown = wait_for_state(page, "ef_message", lambda text, name=name: name in (text or ""))
        assert message in shown, shown
        assert page.get_by_test_id("message").is_visible()
        assert state(page, "ef_volume_items") == []
    page.screenshot(path=str(SCREENSHOTS / "EdgeFusion-web-app-bad-upload.png"))

    # A good upload after them: a zipped DICOM series whose name says nothing; its Modality tag says CT.
    (tmp_path / "series 4.zip").write_bytes(dicom_series_zip(tmp_path, "CT"))
    page.locator("[data-testid=upload] input[type=file]").set_input_files(str(tmp_path / "series 4.zip"))
    items = wait_for_state(page, "ef_volume_items", lambda value: len(value or []) == 1)
    assert items[0]["title"] == "series 4" and state(page, "ef_other_id") == items[0]["value"]
    assert state(page, "ef_status") == "Modality CT preselected: its DICOM Modality is CT. Change it if that is wrong."
    assert state(page, "ef_message") == ""
    page.context.close()


def test_cancel_mid_run_leaves_nothing(browser, server_url):
    page = open_session(browser, server_url)
    load_sample(page)
    volumes_before = state(page, "ef_volume_items")
    page.get_by_test_id("apply").click()  # the default rule: the network, long enough to cancel mid-run
    wait_for_state(page, "ef_status", lambda text: text.startswith("Fusing on"))
    assert page.get_by_test_id("apply").inner_text().strip().lower() == "cancel"
    page.get_by_test_id("apply").click()
    assert wait_for_run_end(page) == "Cancelled; the scene was not changed."
    assert state(page, "ef_volume_items") == volumes_before and not state(page, "ef_has_result")
    page.context.close()


def test_download_gives_the_voxels_of_edgefusion_fuse(browser, server_url, tmp_path):
    import SimpleITK as sitk

    from EdgeFusionLib.cli import main as edgefusion
    from EdgeFusionMRML import sampledata

    page = open_session(browser, server_url)
    load_sample(page)
    choose_rule(page, "pixel-max")
    page.get_by_test_id("apply").click()
    status = wait_for_run_end(page)
    assert "made in" in status, status
    with page.expect_download(timeout=SLOW * 1000) as download:
        page.get_by_test_id("download").click()
    assert download.value.suggested_filename == "EdgeFusionPhantom-MRI _ EdgeFusionPhantom-CT fused.nrrd"  # "+" is not kept in file names
    downloaded = tmp_path / "downloaded.nrrd"
    download.value.save_as(downloaded)
    page.context.close()

    reference = tmp_path / "cli.nrrd"
    assert edgefusion(["fuse", str(sampledata.sample_file("EdgeFusionPhantom-MRI")),
                       str(sampledata.sample_file("EdgeFusionPhantom-CT")), "-o", str(reference), "--modality", "ct",
                       "--method", "pixel-max", "--device", "cpu"]) == 0
    web, cli = sitk.ReadImage(str(downloaded)), sitk.ReadImage(str(reference))
    np.testing.assert_allclose(sitk.GetArrayFromImage(web), sitk.GetArrayFromImage(cli), atol=1e-6)
    np.testing.assert_allclose(web.GetOrigin(), cli.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(web.GetSpacing(), cli.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(web.GetDirection(), cli.GetDirection(), atol=1e-6)


# ---------------------------------------------------------------- one session in this process


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """(web app, URL): one session served by a thread of this process, to read its slice logics."""
    made = queue.Queue()
    port = free_port()
    work_folder = tmp_path_factory.mktemp("session")

    def serve():
        # Built in the thread that renders (OpenGL contexts belong to one thread).
        from trame.app import get_server

        from EdgeFusionApp.webapp import EdgeFusionWebApp

        app = EdgeFusionWebApp(get_server("edgefusion-test", client_type="vue3"), work_folder=work_folder)
        made.put(app)
        app.server.start(port=port, host="127.0.0.1", open_browser=False, show_connection_info=False, thread=True,
                         disable_logging=True)

    threading.Thread(target=serve, daemon=True).start()
    app = made.get(timeout=SLOW)
    deadline = time.monotonic() + SLOW
    while time.monotonic() < deadline:  # until it listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield app, f"http://127.0.0.1:{port}/"
    app.controller.stop()


def test_the_slice_views_in_the_browser_show_the_fused_voxels_and_scroll_together(browser, session):
    app, url = session
    page = open_session(browser, url)
    load_sample(page, "MRI + SPECT phantom")
    choose_rule(page, "pixel-average")
    # Two volumes without a shared DICOM frame of reference: aligned first unless the user unticks it.
    assert page.get_by_test_id("align-checkbox").locator("input").is_checked()
    page.get_by_test_id("apply").click()
    status = wait_for_run_end(page)
    assert "made in" in status and "Aligned first (rigid" in status
    assert app.slicer.scene.GetFirstNodeByName("EdgeFusionPhantom-SPECT to EdgeFusionPhantom-MRI (registration)")
    fused = app.controller.settings.resultVolume
    red = next(view for view in app.slicer.view_manager.get_slice_views() if view.get_orientation() == "Axial")
    composite = app.slice_logic(red).GetSliceCompositeNode()
    assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (
        app.controller.settings.mriVolume.GetID(), fused.GetID())

    time.sleep(3)  # the still (high quality) picture follows the first one
    shown = view_picture(page, 0).astype(float)
    blended = blended_slice_image(app.slice_logic(red))[::-1, :, :3].astype(float)  # VTK rows go up, the page's down
    assert shown.shape == blended.shape
    composite.SetForegroundOpacity(0.0)
    mri_only = blended_slice_image(app.slice_logic(red))[::-1, :, :3].astype(float)
    composite.SetForegroundOpacity(app.controller.settings.opacity)
    error = np.abs(shown - blended).mean()
    missing_layer = np.abs(shown - mri_only).mean()
    # JPEG at quality 90 differs by about a grey level; without the fused SPECT layer the picture is another image.
    print(f"mean |page - slice logic| = {error:.2f} grey levels; without the fused layer {missing_layer:.2f}")
    assert error < 1.5 and missing_layer > 4 * error, (error, missing_layer)
    page.mouse.move(VIEWPORT["width"] - 10, 10)  # no tooltip over the panel
    time.sleep(0.5)
    page.screenshot(path=str(SCREENSHOTS / "EdgeFusion-web-app.png"))

    # Comparison: the MRI alone beside the fusion, scrolled together.
    page.evaluate("() => window.trame.state.set('ef_layout', 'Compare: MRI | fused')")
    page.wait_for_function("document.querySelectorAll('[data-testid=views] img').length === 2", timeout=SLOW * 1000)
    mri_view = next(view for view in app.slicer.view_manager.get_slice_views() if view.name == "MRI")
    start = red.get_slice_value()
    page.locator("[data-testid=views] img").first.hover()
    page.locator("[data-testid=views] .slice-slider .v-slider-thumb").first.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
        time.sleep(0.3)
    time.sleep(3)
    assert mri_view.get_slice_value() > start and red.get_slice_value() == pytest.approx(mri_view.get_slice_value())
    for index, (view, with_fusion) in enumerate(((mri_view, False), (red, True))):
        logic = app.slice_logic(view)
        expected = blended_slice_image(logic)[::-1, :, :3].astype(float)
        assert (logic.GetSliceCompositeNode().GetForegroundVolumeID() == fused.GetID()) == with_fusion
        assert np.abs(view_picture(page, index).astype(float) - expected).mean() < 1.5
    page.mouse.move(VIEWPORT["width"] - 10, 10)
    time.sleep(0.5)
    page.screenshot(path=str(SCREENSHOTS / "EdgeFusion-web-app-compare.png"))
    page.context.close()
