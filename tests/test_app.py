"""`difface app`: the web app, driven through a real headless Chromium (Debian's package, through
Playwright), and its handlers without a browser.

The browser tests start `python -m difface app --port 0` once (module fixture) with the bundled
restoration model and small filled-weight inpainting models passed with --inpaint-prior/--inpaint-estimator,
upload files, click, wait for the result, download it and compare it byte for byte with what
`difface restore` / `difface inpaint` write for the command the app's log line names. They skip with
the reason where Gradio, Playwright or Chromium is absent (.ci/run installs them).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio", reason="the app needs Gradio: pip install 'difface[app]'")

from difface import cli  # noqa: E402
from difface.app import AppServer, ModelChoice, build_app, mask_from_editor  # noqa: E402
from difface.app.handlers import InpaintForm, RestoreForm  # noqa: E402
from difface.data.masks import feathered_mask  # noqa: E402
from difface.images import read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut_lq.png"
CHROMIUM = os.environ.get("DIFFACE_CHROMIUM", "/usr/bin/chromium")
# Flags for a headless Chromium on a machine without network or GPU (background services off: they would
# try to reach Google's hosts at every start).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--disable-default-apps"]
RESULT_TIMEOUT_MS = 240_000  # a loaded 2-core CI machine; a face takes seconds


def browser_skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install 'difface[test]')"
    if not Path(CHROMIUM).is_file():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does this as root)"
    return None


def group_photo(path: Path) -> Path:
    """A 2x2 group of four different faces made from the astronaut (flipped, brighter, darker)."""
    a = cv2.imread(str(ASTRONAUT)).astype(np.float32)
    tiles = [a, a[:, ::-1], np.clip(a * 1.15, 0, 255), np.clip(a * 0.85, 0, 255)]
    img = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    cv2.imwrite(str(path), np.rint(img).astype(np.uint8))
    return path


def run_cli(args: list[str]) -> None:
    assert cli.main(args) == 0, args


def cli_from_log(log_line: str, src: Path, out: Path, **files: Path) -> list[str]:
    """The command the app's log line names ("Same as: difface ..."), with the real input, output and files."""
    args = shlex.split(log_line.split("Same as: ", 1)[1])
    assert args[0] == "difface"
    args = args[1:]
    args[1] = str(src)
    args[args.index("-o") + 1] = str(out)
    for opt, path in files.items():
        args[args.index(f"--{opt}") + 1] = str(path)
    return args


# -- the app in a subprocess, and the browser ----------------------------------------------------------
@pytest.fixture(scope="module")
def filler_inpainter(tmp_path_factory):
    from difface.models import build, fill_deterministic
    from difface.weights import save_network

    d = tmp_path_factory.mktemp("inpainter")
    save_network(fill_deterministic(build("unet_small")), d / "prior.safetensors")
    save_network(fill_deterministic(build("lama_small")), d / "lama.safetensors")
    return d / "prior.safetensors", d / "lama.safetensors"


@pytest.fixture(scope="module")
def app(filler_inpainter, tmp_path_factory):
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    prior, lama = filler_inpainter
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), GRADIO_TEMP_DIR=str(
        tmp_path_factory.mktemp("gradio")))
    cmd = [sys.executable, "-m", "difface", "app", "--port", "0", "--device", "cpu",
           "--inpaint-prior", str(prior), "--inpaint-estimator", str(lama)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, url = [], None
    deadline = time.time() + 180
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"difface app: (http://127\.0\.0\.1:\d+/)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        pytest.fail("the app did not start:\n" + "".join(lines))
    drain = _Drain(proc, lines)
    yield {"url": url, "proc": proc, "log": lines, "port": int(url.rsplit(":", 1)[1].strip("/"))}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    drain.join()


class _Drain:
    """Keeps reading the app's output (so that it never blocks on a full pipe) into `lines`."""

    def __init__(self, proc, lines):
        import threading

        self.thread = threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True)
        self.thread.start()

    def join(self):
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.requests = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.goto(app["url"])
    pg.wait_for_selector("#restore_run", timeout=60_000)
    yield pg
    context.close()


def assert_local(pg, app) -> None:
    """Every request the page made went to the app on 127.0.0.1 (none leaves the machine)."""
    hosts = {re.match(r"^[a-z]+://([^/]+)", u).group(1) for u in pg.requests if re.match(r"^[a-z]+://", u)}
    assert hosts == {f"127.0.0.1:{app['port']}"}, sorted(set(pg.requests))


def upload(pg, elem: str, path: Path) -> None:
    pg.set_input_files(f"#{elem} input[type=file]", str(path))
    pg.locator(f"#{elem} img").first.wait_for(timeout=30_000)


def run_and_wait(pg, tab: str) -> tuple[str, float]:
    """Click the tab's button, wait for a new log line; returns (log line, seconds from click to result)."""
    before = pg.input_value(f"#{tab}_log textarea")
    t0 = time.perf_counter()
    pg.click(f"#{tab}_run")
    pg.wait_for_function("([sel, prev]) => { const v = document.querySelector(sel).value; return v && v !== prev; }",
                         arg=[f"#{tab}_log textarea", before], timeout=RESULT_TIMEOUT_MS)
    return pg.input_value(f"#{tab}_log textarea"), time.perf_counter() - t0


def download(pg, elem: str, dest: Path) -> Path:
    with pg.expect_download() as d:
        pg.click(f"#{elem}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    d.value.save_as(dest)
    return dest


def choose(pg, elem: str, label: str) -> None:
    pg.locator(f"#{elem}").get_by_label(label, exact=True).check()


# -- browser tests --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_aligned_face_download_equals_difface_restore(page, app, tmp_path):
    upload(page, "restore_input", ASTRONAUT)
    choose(page, "restore_mode", "aligned face")
    log_line, seconds = run_and_wait(page, "restore")
    print(f"aligned face: {seconds:.1f} s from click to result")
    assert "aligned face restored" in log_line and "--aligned" in log_line, log_line
    got = download(page, "restore_download", tmp_path / "app" / "astronaut_lq.png")
    run_cli(cli_from_log(log_line, ASTRONAUT, tmp_path / "cli"))
    assert got.read_bytes() == (tmp_path / "cli" / "astronaut_lq.png").read_bytes()
    assert len(page.locator("#restore_faces img").all()) >= 3  # input, estimate, result
    assert_local(page, app)


@pytest.mark.slow
def test_group_photo_with_four_faces_equals_difface_restore(page, app, tmp_path):
    group = group_photo(tmp_path / "group.png")
    upload(page, "restore_input", group)
    log_line, seconds = run_and_wait(page, "restore")
    print(f"group photo (4 faces, 384x384, x2): {seconds:.1f} s from click to result")
    assert "group.png: 4 face(s) restored" in log_line, log_line
    got = download(page, "restore_download", tmp_path / "app" / "group.png")
    run_cli(cli_from_log(log_line, group, tmp_path / "cli"))
    assert got.read_bytes() == (tmp_path / "cli" / "group.png").read_bytes()
    assert read_image(got).rgb.shape == (768, 768, 3)
    page.locator("#restore_faces img").nth(7).wait_for(timeout=10_000)  # 4 crops + 4 restorations
    assert_local(page, app)


@pytest.mark.slow
def test_bad_uploads_give_messages_and_the_app_keeps_serving(page, app, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not an image\n")
    upload(page, "restore_input", fake)
    page.click("#restore_run")
    page.get_by_text("notes.png: not a readable image").wait_for(timeout=60_000)
    text = tmp_path / "notes.txt"
    text.write_text("plain text\n")
    page.set_input_files("#restore_input input[type=file]", str(text))  # refused by the page itself
    page.get_by_text("Invalid file type: notes.txt").wait_for(timeout=30_000)
    # the next request works
    upload(page, "restore_input", ASTRONAUT)
    choose(page, "restore_mode", "aligned face")
    log_line, _ = run_and_wait(page, "restore")
    assert log_line.startswith("astronaut_lq.png: aligned face restored"), log_line
    assert app["proc"].poll() is None
    assert_local(page, app)


def _brush_stroke(pg) -> None:
    pg.click("#inpaint_editor button[aria-label='Brush']")
    box = pg.locator("#inpaint_editor canvas").first.bounding_box()
    x, y = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.3
    pg.mouse.move(x, y)
    pg.mouse.down()
    for k in range(1, 21):
        pg.mouse.move(x + 6 * k, y + 3 * k)
    pg.mouse.up()


def _beyond_soft_edge(missing: np.ndarray, model_size: int = 64) -> np.ndarray:
    """The known pixels that an inpainting of a face larger than the model keeps exactly: those beyond the soft
    edge (2 model pixels) over which the fill is blended in."""
    m = torch.from_numpy(missing[None, None].astype(np.float32))
    return feathered_mask(m, 2 * max(missing.shape) / model_size)[0, 0].numpy() == 0


def _inpaint_with_brush(pg, app, tmp_path, model_label: str | None, start: int | None):
    pg.get_by_role("tab", name="Inpaint").click()
    if model_label is not None:
        pg.locator("#inpaint_model input").click()
        pg.get_by_role("option", name=model_label).click()
        pg.wait_for_timeout(500)
    upload(pg, "inpaint_input", ASTRONAUT)
    pg.locator("#inpaint_editor canvas").first.wait_for()
    pg.wait_for_timeout(1000)  # the face is drawn into the editor
    _brush_stroke(pg)
    if start is not None:
        choose(pg, "inpaint_start", "custom")
        pg.fill("#inpaint_start_custom input", str(start))
    log_line, seconds = run_and_wait(pg, "inpaint")
    result = download(pg, "inpaint_download", tmp_path / "app" / "astronaut_lq.png")
    mask_file = download(pg, "inpaint_download_mask", tmp_path / "app" / "astronaut_lq_mask.png")
    x, r = cv2.imread(str(ASTRONAUT)), cv2.imread(str(result))
    missing = cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE) > 127
    assert 0.005 < missing.mean() < 0.5, missing.mean()  # the stroke, not nothing, not everything
    far = _beyond_soft_edge(missing)
    assert np.array_equal(r[far], x[far])  # every known pixel beyond the fill's soft edge unchanged
    assert not np.array_equal(r[missing], x[missing])  # the stroke was filled
    assert_local(pg, app)
    return log_line, result, mask_file, seconds


@pytest.mark.slow
def test_brush_stroke_inpaints_with_known_pixels_unchanged(page, app, tmp_path):
    """Filled-weight models passed with --inpaint-prior/--inpaint-estimator: they paint noise, but the
    mask from the mouse stroke, the kept pixels and the equality with `difface inpaint` are real."""
    log_line, result, mask_file, seconds = _inpaint_with_brush(page, app, tmp_path, None, start=30)
    print(f"inpainting (filled-weight models, start step 30): {seconds:.1f} s")
    assert "--start-step 30" in log_line and "--mask astronaut_lq_mask.png" in log_line, log_line
    run_cli(cli_from_log(log_line, ASTRONAUT, tmp_path / "cli", mask=mask_file))
    assert result.read_bytes() == (tmp_path / "cli" / "astronaut_lq.png").read_bytes()


@pytest.mark.slow
def test_brush_stroke_with_the_bundled_inpainter(page, app, tmp_path):
    from difface.app import BUNDLED
    from difface.core import bundled_model_paths

    try:
        bundled_model_paths("inpainting")
    except FileNotFoundError:
        pytest.skip("the bundled inpainter (src/difface/assets/small64/inpainter.safetensors) is not installed yet")
    _inpaint_with_brush(page, app, tmp_path, BUNDLED["inpainting"], start=None)


@pytest.mark.slow
def test_a_second_job_waits_in_the_queue(browser, app, page, tmp_path):
    group = group_photo(tmp_path / "group.png")
    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    other.goto(app["url"])
    other.wait_for_selector("#restore_run", timeout=60_000)
    upload(page, "restore_input", group)
    upload(other, "restore_input", ASTRONAUT)
    choose(other, "restore_mode", "aligned face")
    page.click("#restore_run")
    page.get_by_text(re.compile(r"face \d of \d")).first.wait_for(timeout=60_000)  # the first job is running
    other.click("#restore_run")
    other.get_by_text(re.compile(r"queue: 1/\d")).first.wait_for(timeout=30_000)  # the second one waits
    other.wait_for_function("document.querySelector('#restore_log textarea').value.length > 0",
                            timeout=RESULT_TIMEOUT_MS)
    assert "4 face(s) restored" in page.input_value("#restore_log textarea")
    assert "aligned face restored" in other.input_value("#restore_log textarea")
    other.context.close()


@pytest.mark.slow
def test_no_request_leaves_the_machine_and_the_server_listens_on_loopback_only(page, app):
    """Load the page, open both tabs, restore: every request goes to 127.0.0.1; `ss -ltnp` shows the app's
    process listening on 127.0.0.1 only."""
    page.get_by_role("tab", name="Inpaint").click()
    page.get_by_role("tab", name="Restore").click()
    upload(page, "restore_input", ASTRONAUT)
    run_and_wait(page, "restore")
    page.wait_for_timeout(1000)
    assert len(page.requests) > 10
    assert_local(page, app)
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: the listening check needs it")
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout
    mine = [line.split() for line in out.splitlines() if f"pid={app['proc'].pid}," in line]
    assert mine, out
    assert {f[3] for f in mine} == {f"127.0.0.1:{app['port']}"}, out


# -- without a browser -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = AppServer(device="cpu", work_dir=tmp_path_factory.mktemp("app-work"))
    yield s
    s.close()


def _restore(server, path, mode="aligned face", **kw):
    args = dict(model=next(iter(server.restore_models)), start="model default", start_custom=None, eta=None,
                sampler="official", nfe=None, seed=12345, upscale=2)
    args.update(kw)
    report = args.pop("report", lambda f, t: None)
    return server.restore(str(path), RestoreForm(mode=mode, **args), report=report)


@contextlib.contextmanager
def says(pattern: str):
    """The block raises gr.Error (a message in the page) whose text matches `pattern`."""
    with pytest.raises(gr.Error) as e:
        yield
    assert re.search(pattern, e.value.message), e.value.message


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_bad_inputs_give_readable_messages(server, tmp_path):
    import struct

    fake = tmp_path / "letter.png"
    fake.write_text("Dear user,\n")
    with says(r"^letter.png: not a readable image"):
        _restore(server, fake)
    corrupt = tmp_path / "cut.png"
    corrupt.write_bytes(ASTRONAUT.read_bytes()[:3000])
    with says(r"^cut.png: "):
        _restore(server, corrupt)
    bomb = tmp_path / "bomb.png"  # 8000 x 8000 = 64 MP of zeros in a file of a few tens of KB
    ok, buf = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))
    bomb.write_bytes(buf.tobytes())
    assert bomb.stat().st_size < 200_000
    with says(r"bomb.png: image is 8000x8000 = 64.0 megapixels, over the limit of 50 MP"):
        _restore(server, bomb, mode="whole photo")
    huge = tmp_path / "huge.png"  # only a header: 100000 x 100000, never decoded
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                     + _png_chunk(b"IEND", b""))
    with says(r"huge.png: image is 100000x100000"):
        _restore(server, huge)
    with says("Upload a photo or an aligned face first"):
        server.restore(None, RestoreForm(next(iter(server.restore_models)), mode="aligned face", seed=12345))
    with says(r"^start step: "):
        _restore(server, ASTRONAUT, start="custom", start_custom=100000)
    with says(r"^NFE: "):
        _restore(server, ASTRONAUT, sampler="ddim", nfe=0)
    # no face: the photo is upscaled and the message says so
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((96, 128, 3), 180, np.uint8))
    out = _restore(server, blank, mode="whole photo")
    assert out["message"] == "no face found; the image was only upscaled"
    assert "0 face(s) restored" in out["log"]
    assert read_image(out["file"]).rgb.shape == (192, 256, 3)
    # and the server still restores
    out = _restore(server, ASTRONAUT)
    assert read_image(out["file"]).rgb.shape == (192, 192, 3)


def test_pixel_limit_of_the_app(tmp_path):
    s = AppServer(device="cpu", max_pixels=10_000, work_dir=tmp_path)
    with says(r"astronaut_lq.png: image is 192x192 = 0.0 megapixels, over the limit of "
                                       r"0.01 MP \(raise it with the app's --max-pixels"):
        _restore(s, ASTRONAUT)


def test_progress_reports_faces_and_denoising_steps(server, tmp_path):
    reports = []
    group = group_photo(tmp_path / "group.png")
    # a fixed start step (the bundled default, auto, picks a number per face)
    _restore(server, group, mode="whole photo", start="custom", start_custom=20,
             report=lambda f, t: reports.append((f, t)))
    texts = [t for _, t in reports]
    assert "face 1 of 4: denoising step 1 of 20" in texts
    assert "face 4 of 4: denoising step 20 of 20" in texts
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    reports.clear()
    _restore(server, ASTRONAUT, sampler="ddim", nfe=4, start="custom", start_custom=20,
             report=lambda f, t: reports.append((f, t)))
    assert [t for _, t in reports][-1] == "face 1 of 1: denoising step 4 of 4"


def test_inpaint_tab_says_why_it_is_not_available(tmp_path):
    s = AppServer(device="cpu", work_dir=tmp_path, inpaint_models=[
        ModelChoice("broken", str(tmp_path / "no-prior.safetensors"), str(tmp_path / "no-lama.safetensors"))])
    assert s.inpaint_unavailable.startswith("broken: ")
    assert not s.inpaint_models
    with says("Inpainting is not available: broken: "):
        s.inpaint(str(ASTRONAUT), None, None, InpaintForm("broken", seed=1))
    demo = build_app(s)
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("Inpainting is not available" in t for t in texts)


def test_bundled_inpainter_missing_is_said(tmp_path):
    from difface.core import bundled_model_paths

    try:
        bundled_model_paths("inpainting")
        pytest.skip("the bundled inpainter is installed: nothing is missing")
    except FileNotFoundError:
        pass
    s = AppServer(device="cpu", work_dir=tmp_path)
    assert "no bundled inpainter is installed" in s.inpaint_unavailable


def test_mask_from_editor_layers(tmp_path):
    layer = np.zeros((32, 48, 4), np.uint8)
    layer[5:9, 10:20] = (255, 255, 255, 255)
    layer[20, 30] = (255, 255, 255, 40)  # the soft edge of a brush stroke is missing too
    cv2.imwrite(str(tmp_path / "layer.png"), layer)
    m = mask_from_editor({"background": None, "layers": [{"path": str(tmp_path / "layer.png")}], "composite": None})
    assert m.shape == (32, 48) and m.sum() == 41 and m[20, 30]
    assert mask_from_editor({"background": None, "layers": [], "composite": None}) is None
    assert mask_from_editor(None) is None


def test_inpaint_handler_keeps_known_pixels_and_matches_difface_inpaint(filler_inpainter, tmp_path):
    prior, lama = filler_inpainter
    s = AppServer(device="cpu", work_dir=tmp_path / "work",
                  inpaint_models=[ModelChoice("filled", str(prior), str(lama))])
    painted = np.zeros((96, 96), bool)  # painted on a canvas of another size: resized nearest to the face
    painted[30:50, 20:70] = True
    out = s.inpaint(str(ASTRONAUT), painted, None, InpaintForm("filled", "custom", 10, seed=7))
    x, r = read_image(ASTRONAUT).rgb, read_image(out["file"]).rgb
    missing = out["missing"]
    assert missing.shape == (192, 192) and abs(missing.mean() - 20 * 50 / 96**2) < 1e-6
    far = _beyond_soft_edge(missing)
    assert far.sum() < (~missing).sum() and np.array_equal(r[far], x[far])
    run_cli(cli_from_log(out["log"], ASTRONAUT, tmp_path / "cli", mask=Path(out["mask"])))
    assert Path(out["file"]).read_bytes() == (tmp_path / "cli" / "astronaut_lq.png").read_bytes()
    lifted = tmp_path / "lifted.png"  # no pixel is exactly black: nothing painted means nothing missing
    cv2.imwrite(str(lifted), np.maximum(cv2.imread(str(ASTRONAUT)), 1))
    with says("lifted.png: no missing pixels .* paint the missing region"):
        s.inpaint(str(lifted), None, None, InpaintForm("filled", seed=7))


def test_port_taken_is_a_clear_error(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["app", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err


def test_official_models_are_offered_only_when_cached(tmp_path, monkeypatch):
    from difface.app import official_models
    from difface.weights import local_path

    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path))
    assert official_models("restoration") == [] and official_models("inpainting") == []
    for name in ("iddpm-ffhq512", "swinir-ffhq512", "iddpm-ffhq256"):
        local_path(name).parent.mkdir(parents=True, exist_ok=True)
        local_path(name).write_bytes(b"")
    assert [(m.prior, m.estimator) for m in official_models("restoration")] == [("iddpm-ffhq512", "swinir-ffhq512")]
    assert official_models("inpainting") == []  # lama-inpainting256 is missing


def test_start_step_auto_matches_difface_restore(server, tmp_path):
    if not server.auto:
        pytest.skip("difface.autostart is not in this copy of difface: the page offers no 'auto'")
    out = _restore(server, ASTRONAUT, start="auto")
    assert "start step auto (per image)" in out["log"] and "--start-step auto" in out["log"]
    run_cli(cli_from_log(out["log"], ASTRONAUT, tmp_path / "cli"))
    assert Path(out["file"]).read_bytes() == (tmp_path / "cli" / "astronaut_lq.png").read_bytes()


# -- the app as a network service: logins, the scripting API, the files it serves ----------------------------
LOGIN = ("alice", "correct horse 7")


def fetch(url: str, data: bytes | None = None, headers: dict | None = None, opener=None) -> tuple[int, bytes]:
    """(status, body) of a real HTTP request (urllib; errors are statuses, not exceptions)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with (opener.open if opener else urllib.request.urlopen)(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@contextlib.contextmanager
def served(tmp, auth=None):
    """A real app (AppServer + build_app + launch, as `difface app` runs them) on 127.0.0.1, with Gradio's files
    in a folder of its own (as the command does); yields (url, files folder, server)."""
    from difface.app import launch
    from difface.commands.app import check_port

    files = tmp / "gradio-files"
    files.mkdir()
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(files)
    s = AppServer(device="cpu", work_dir=tmp / "work")
    demo = build_app(s)
    try:
        _, url = launch(demo, "127.0.0.1", check_port("127.0.0.1", 0), block=False, auth=auth)
        yield url.rstrip("/"), files, s
    finally:
        demo.close()
        s.close()
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old


@pytest.fixture(scope="module")
def open_app(tmp_path_factory):
    with served(tmp_path_factory.mktemp("open-app")) as x:
        yield x


@pytest.fixture(scope="module")
def locked_app(tmp_path_factory):
    from difface.commands.app import login_checker

    with served(tmp_path_factory.mktemp("locked-app"), auth=login_checker([LOGIN, ("bob", "other")])) as x:
        yield x


def test_loopback_is_127_8_and_localhost_only():
    from difface.commands.app import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.com", "128.0.0.1"]))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_a_non_loopback_host_needs_a_login_or_no_auth(host, capsys):
    """The command refuses to start (status 2, before loading anything) and says what to give."""
    assert cli.main(["app", "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"--host {host} lets anyone who can reach this machine use the app" in err
    assert "--auth USER:PASSWORD" in err and "--auth-file" in err and "--no-auth" in err


def test_bad_logins_are_refused_without_printing_the_password(tmp_path, capsys):
    assert cli.main(["app", "--host", "0.0.0.0", "--auth", "just-a-secret-word"]) == 2
    err = capsys.readouterr().err
    assert "--auth (number 1): expected USER:PASSWORD" in err and "just-a-secret-word" not in err
    users = tmp_path / "users.txt"
    users.write_text("# logins\nalice:pw-one\n\nbob-without-colon-secret\n")
    assert cli.main(["app", "--host", "0.0.0.0", "--auth-file", str(users)]) == 2
    err = capsys.readouterr().err
    assert f"--auth-file {users}, line 4: expected user:password" in err and "secret" not in err
    assert "pw-one" not in err
    assert cli.main(["app", "--host", "0.0.0.0", "--auth-file", str(tmp_path / "none.txt")]) == 2
    assert "none.txt: cannot be read" in capsys.readouterr().err
    assert cli.main(["app", "--no-auth", "--auth", "a:b"]) == 2
    assert "--no-auth contradicts --auth" in capsys.readouterr().err
    from difface.commands.app import check_access, read_logins

    users.write_text("alice:pw-one\n bob : p:w \n")
    assert read_logins(["x:y"], str(users)) == [("x", "y"), ("alice", "pw-one"), ("bob ", " p:w")]
    assert check_access("0.0.0.0", [], no_auth=True) == "open-network"
    assert check_access("127.0.0.1", [], no_auth=False) == "open"
    assert check_access("0.0.0.0", [("a", "b")], no_auth=False) == "login"


def _login_opener(url: str, user: str, password: str):
    """A urllib opener holding the session cookie of a login through the app's /login form."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    status, body = fetch(f"{url}/login", urllib.parse.urlencode({"username": user, "password": password}).encode(),
                        {"Content-Type": "application/x-www-form-urlencoded"}, opener=opener)
    return status, opener


def test_with_a_login_nothing_is_served_without_it(locked_app, tmp_path):
    """Real HTTP requests to a real server with a login: no page (only the login form), no API call, no upload,
    no file download without credentials; the same requests work after logging in, through gradio_client too."""
    import json

    from gradio_client import Client, handle_file

    url, files, _ = locked_app
    status, page = fetch(url + "/")
    assert status == 200 and b'"auth_required":true' in page.replace(b" ", b"")
    assert b"restore_run" not in page and b"Blind face restoration" not in page  # the login form, not the app
    for path in ["/config", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/queue/data?session_hash=x"]:
        assert fetch(url + path)[0] == 401, path
    body = json.dumps({"data": [None], "fn_index": 0, "session_hash": "x"}).encode()
    for path in ["/gradio_api/queue/join", "/gradio_api/call/restore", "/gradio_api/run/restore"]:
        assert fetch(url + path, body, {"Content-Type": "application/json"})[0] in (401, 403), path
    boundary = "difface"
    upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
              f"Content-Type: image/png\r\n\r\n").encode() + ASTRONAUT.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    assert fetch(url + "/gradio_api/upload", upload, {"Content-Type": f"multipart/form-data; boundary={boundary}"})[0] \
        == 401
    assert not list(files.rglob("a.png"))  # nothing was stored
    with pytest.raises(Exception, match="credentials"):
        Client(url + "/", verbose=False)
    with pytest.raises(ValueError):
        Client(url + "/", auth=(LOGIN[0], "wrong"), verbose=False)
    # with the login: the API works, and its result is a file the app serves, but only with the cookie
    result, log_line = Client(url + "/", auth=LOGIN, verbose=False).predict(
        handle_file(ASTRONAUT), mode="aligned face", api_name="/restore")
    assert "aligned face restored" in log_line
    served_copy = [p for p in files.rglob("astronaut_lq.png") if p.read_bytes() == Path(result).read_bytes()]
    assert served_copy
    assert fetch(f"{url}/gradio_api/file={served_copy[0]}")[0] == 401
    status, opener = _login_opener(url, *LOGIN)
    assert status == 200
    assert fetch(f"{url}/gradio_api/file={served_copy[0]}", opener=opener) == (200, Path(result).read_bytes())
    assert fetch(url + "/config", opener=opener)[0] == 200
    assert _login_opener(url, "bob", "wrong")[0] == 400


def test_the_api_has_named_parameters_and_plain_return_values(open_app, tmp_path):
    """view_api: /restore and /inpaint with readable parameter names, only the image required; the results are
    file paths (not update dicts) whose bytes equal what the logged command writes."""
    from gradio_client import Client, handle_file

    url, _, _ = open_app
    client = Client(url + "/", verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {"/restore", "/inpaint"}
    params = {name: [(p["parameter_name"], p["parameter_has_default"]) for p in e["parameters"]]
              for name, e in api.items()}
    assert params["/restore"] == [("image", False)] + [(n, True) for n in (
        "mode", "model", "start_step", "custom_start_step", "eta", "sampler", "nfe", "seed", "upscale")]
    assert params["/inpaint"] == [("image", False)] + [(n, True) for n in (
        "mask", "model", "start_step", "custom_start_step", "eta", "sampler", "nfe", "seed")]
    assert [r["label"] for r in api["/restore"]["returns"]] == ["result", "log"]
    assert [r["label"] for r in api["/inpaint"]["returns"]] == ["result", "mask", "log"]
    result, log_line = client.predict(handle_file(ASTRONAUT), mode="whole photo", upscale=2, api_name="/restore")
    assert isinstance(result, str) and Path(result).is_file(), result
    run_cli(cli_from_log(log_line, ASTRONAUT, tmp_path / "cli"))
    assert Path(result).read_bytes() == (tmp_path / "cli" / "astronaut_lq.png").read_bytes()
    # inpainting with a mask file: plain paths back, the same bytes as `difface inpaint --mask`
    mask = np.zeros((192, 192), np.uint8)
    mask[60:100, 40:150] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    result, used, log_line = client.predict(handle_file(ASTRONAUT), mask=handle_file(tmp_path / "mask.png"),
                                            start_step="custom", custom_start_step=10, api_name="/inpaint")
    assert Path(result).is_file() and Path(used).is_file()
    run_cli(cli_from_log(log_line, ASTRONAUT, tmp_path / "cli-inpaint", mask=Path(used)))
    assert Path(result).read_bytes() == (tmp_path / "cli-inpaint" / "astronaut_lq.png").read_bytes()
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="letter.png: not a readable image"):
        (tmp_path / "letter.png").write_text("Dear user,\n")
        client.predict(handle_file(tmp_path / "letter.png"), api_name="/restore")


def test_the_app_serves_only_its_own_files(open_app, tmp_path):
    """/gradio_api/file= for anything but a file the app made in its own folder is refused: other files, `../`,
    absolute paths, the app's work folder, a symlink out of the folder, another Gradio app's cache, /file=."""
    from gradio_client import Client, handle_file

    url, files, server = open_app
    result, _ = Client(url + "/", verbose=False).predict(handle_file(ASTRONAUT), mode="aligned face",
                                                          api_name="/restore")
    own = next(p for p in files.rglob("astronaut_lq.png") if p.read_bytes() == Path(result).read_bytes())
    assert fetch(f"{url}/gradio_api/file={own}") == (200, own.read_bytes())
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the network\n")
    (files / "evil").mkdir()
    (files / "evil" / "link.txt").symlink_to(secret)
    other_gradio = tmp_path / "gradio" / "abc"  # where another Gradio app on the machine keeps its files
    other_gradio.mkdir(parents=True)
    (other_gradio / "theirs.png").write_bytes(ASTRONAUT.read_bytes())
    work_result = next(server.work_dir.rglob("*.png"))
    rel = os.path.relpath(secret, files)
    for path in [f"/gradio_api/file={secret}", "/gradio_api/file=/etc/passwd", f"/gradio_api/file={rel}",
                 f"/gradio_api/file={files}/../{secret.name}", f"/gradio_api/file={files}/%2e%2e/{secret.name}",
                 f"/gradio_api/file={files}/evil/link.txt", f"/gradio_api/file={work_result}",
                 f"/gradio_api/file={other_gradio / 'theirs.png'}", f"/gradio_api/file={files}",
                 f"/file={own}", f"/file={secret}", "/gradio_api/file=README.md", f"/gradio_api/file=file://{secret}"]:
        status, body = fetch(url + path)
        assert status in (403, 404), (path, status)
        assert b"not for the network" not in body and b"root:" not in body


@pytest.mark.slow
def test_the_readme_api_example_runs_against_difface_app(tmp_path):
    """The README's gradio_client block, exactly (only the URL is the test's), against `difface app --port 0`."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### The app's API.*?```python\n(.*?)```", text, re.S).group(1)
    assert 'Client("http://127.0.0.1:7860/")' in block
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("GRADIO_TEMP_DIR", None)
    before = set(Path(tempfile.gettempdir()).glob("difface-app-*"))
    proc = subprocess.Popen([sys.executable, "-m", "difface", "app", "--port", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        url = None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"difface app: (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, "".join(lines)
        _Drain(proc, lines)
        script = tmp_path / "example.py"
        script.write_text(block.replace("http://127.0.0.1:7860/", url))
        out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        log_line, result = out.stdout.strip().splitlines()[-2:]
        assert "Same as: difface restore astronaut_lq.png" in log_line
        run_cli(cli_from_log(log_line, ASTRONAUT, tmp_path / "cli"))
        assert Path(result).read_bytes() == (tmp_path / "cli" / "astronaut_lq.png").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, "".join(lines)
    assert set(Path(tempfile.gettempdir()).glob("difface-app-*")) <= before  # its folders are removed at exit
