"""Screenshots of `difface app` after real runs, and seconds from upload to result, in headless Chromium.

    python scripts/maintainer/app_screenshots.py --out docs/images   # app_restore.png, app_inpaint.png + timings
    python scripts/maintainer/app_screenshots.py --timing-only                # only the timings

Starts `python -m difface app --port 0` (bundled models; --inpaint-prior/--inpaint-estimator are passed
on), uploads the public-domain astronaut (examples/astronaut_lq.png) as a whole photo, as an aligned
face and as a 2x2 group made from it, and, when an inpainter is served, an aligned crop of its face with
a brush stroke drawn with the mouse. Prints the seconds from the upload to the result on the page.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "examples" / "astronaut_lq.png"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def group_photo(path: Path) -> Path:
    """The 2x2 group of tests/test_app.py: the astronaut, flipped, brighter and darker."""
    a = cv2.imread(str(ASTRONAUT)).astype(np.float32)
    tiles = [a, a[:, ::-1], np.clip(a * 1.15, 0, 255), np.clip(a * 0.85, 0, 255)]
    cv2.imwrite(str(path), np.rint(np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0))
                .astype(np.uint8))
    return path


def aligned_astronaut(path: Path, size: int = 192) -> Path:
    """The astronaut's face warped onto the FFHQ template (the input the inpainter expects)."""
    from difface.face.align import estimate_alignment, warp_faces
    from difface.face.detect import get_detector
    from difface.face.photo import find_faces
    from difface.images import read_image, write_image

    rgb = read_image(ASTRONAUT).rgb
    dets = find_faces(rgb, get_detector("mtcnn"))
    mats = estimate_alignment(dets.landmarks[:1].astype(np.float64), size)
    write_image(path, warp_faces(rgb, mats, size)[0])
    return path


def start_app(extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "difface", "app", "--port", "0", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print("app:", line.rstrip())
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the app did not start")


def upload_and_run(page, tab: str, path: Path) -> tuple[float, str]:
    """Seconds from the upload to the result on the page, and the log line."""
    before = page.input_value(f"#{tab}_log textarea")
    t0 = time.perf_counter()
    page.set_input_files(f"#{tab}_input input[type=file]", str(path))
    page.locator(f"#{tab}_input img").first.wait_for()
    page.click(f"#{tab}_run")
    page.wait_for_function("([s, p]) => { const v = document.querySelector(s).value; return v && v !== p; }",
                           arg=[f"#{tab}_log textarea", before], timeout=600_000)
    return time.perf_counter() - t0, page.input_value(f"#{tab}_log textarea")


def wait_images(page, *selectors: str) -> None:
    """Wait until the images under each selector are loaded and drawn (the log line comes first)."""
    for sel in selectors:
        page.wait_for_function("(s) => { const ims = [...document.querySelectorAll(s + ' img')]; "
                               "return ims.length > 0 && ims.every(i => i.complete && i.naturalWidth > 0); }",
                               arg=sel, timeout=60_000)
    page.wait_for_timeout(500)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument("--inpaint-prior")
    ap.add_argument("--inpaint-estimator")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    extra = ["--inpaint-prior", args.inpaint_prior, "--inpaint-estimator", args.inpaint_estimator] \
        if args.inpaint_prior else []
    tmp = Path(tempfile.mkdtemp(prefix="difface-shots-"))
    proc, url = start_app(extra)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#restore_run")
            page.locator("#restore_mode").get_by_label("aligned face", exact=True).check()
            s, line = upload_and_run(page, "restore", ASTRONAUT)
            print(f"aligned face (192x192): {s:.1f} s from upload to result | {line}")
            page.locator("#restore_mode").get_by_label("whole photo", exact=True).check()
            s, line = upload_and_run(page, "restore", group_photo(tmp / "group.png"))
            print(f"group photo (384x384, 4 faces, x2): {s:.1f} s from upload to result | {line}")
            s, line = upload_and_run(page, "restore", ASTRONAUT)
            print(f"whole photo (192x192, 1 face, x2): {s:.1f} s from upload to result | {line}")
            if not args.timing_only:
                args.out.mkdir(parents=True, exist_ok=True)
                wait_images(page, "#restore_slider", "#restore_faces")
                page.screenshot(path=str(args.out / "app_restore.png"), full_page=True)
                print("wrote", args.out / "app_restore.png")
            page.get_by_role("tab", name="Inpaint").click()
            if page.locator("#inpaint_unavailable").count():
                print("inpainting:", page.inner_text("#inpaint_unavailable"))
                if not args.timing_only:
                    page.screenshot(path=str(args.out / "app_inpaint.png"), full_page=True)
                    print("wrote", args.out / "app_inpaint.png", "(inpainting not available)")
            else:
                face = aligned_astronaut(tmp / "astronaut_face.png")
                page.set_input_files("#inpaint_input input[type=file]", str(face))
                page.locator("#inpaint_editor canvas").first.wait_for()
                page.wait_for_timeout(1500)
                page.click("#inpaint_editor button[aria-label='Brush']")
                box = page.locator("#inpaint_editor canvas").first.bounding_box()
                # a stroke across the eyes of the aligned face
                y = box["y"] + box["height"] * 0.47
                page.mouse.move(box["x"] + box["width"] * 0.3, y)
                page.mouse.down()
                for k in range(1, 31):
                    page.mouse.move(box["x"] + box["width"] * (0.3 + 0.4 * k / 30), y + 2 * np.sin(k / 4))
                page.mouse.up()
                t0 = time.perf_counter()
                page.click("#inpaint_run")
                page.wait_for_function("document.querySelector('#inpaint_log textarea').value.length > 0",
                                       timeout=600_000)
                print(f"inpainting: {time.perf_counter() - t0:.1f} s from click to result | "
                      f"{page.input_value('#inpaint_log textarea')}")
                if not args.timing_only:
                    wait_images(page, "#inpaint_slider", "#inpaint_panels")
                    page.screenshot(path=str(args.out / "app_inpaint.png"), full_page=True)
                    print("wrote", args.out / "app_inpaint.png")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
