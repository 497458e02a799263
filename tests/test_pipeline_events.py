"""The pipelines' in-memory API as a front end uses it: progress and face counts through `callback`, inpainting
masks in memory, and the app's model catalogue importable without Gradio (no front end subclasses a
pipeline or sends a mask through a file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from difface import cli
from difface.config import InpaintOptions, PhotoOptions, RestoreOptions, SamplingOptions
from difface.data.masks import feathered_mask
from difface.images import LoadedImage, read_image, write_image
from difface.pipeline import InpaintPipeline, RestorePipeline

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut_lq.png"
START = 2  # a fixed start step of ddim250: the official loop runs START steps, indices START - 1 down to 0


def _kinds(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


def test_restore_aligned_reports_faces_batches_and_every_step():
    pipe = RestorePipeline.load(RestoreOptions(aligned=True, sampling=SamplingOptions(start_step=START, seed=3)))
    face = read_image(ASTRONAUT)
    images = [face, LoadedImage(np.ascontiguousarray(face.rgb[:, ::-1]), None, 8, False)]
    events: list[dict] = []
    got = pipe.restore_aligned(images, callback=events.append)
    assert _kinds(events) == ["faces", "face_start"] + ["step"] * START + ["face_end"]
    assert events[0]["count"] == 2 and events[1]["count"] == 2 and events[-1]["count"] == 2
    assert [e["i"] for e in events if e["event"] == "step"] == list(range(START - 1, -1, -1))
    assert all(tuple(e["x"].shape) == (2, 3, 64, 64) for e in events if e["event"] == "step")
    plain = pipe.restore_aligned(images)  # the callback only watches: the same pixels without it
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, plain))

    events.clear()
    few = RestorePipeline(pipe.model, RestoreOptions(aligned=True, sampling=SamplingOptions(
        start_step=START, sampler="ddim", nfe=2, seed=3)))
    few.restore_image(face, callback=events.append)
    assert [e["i"] for e in events if e["event"] == "step"] == [0, 1]  # few-step solvers count up


def test_whole_photo_reports_the_faces_found_before_restoring_them(tmp_path):
    a = cv2.imread(str(ASTRONAUT)).astype(np.float32)
    group = np.concatenate([np.concatenate([a, a[:, ::-1]], 1), np.concatenate([a * 0.85, a[::1, ::-1] * 0.9], 1)])
    cv2.imwrite(str(tmp_path / "group.png"), np.clip(group, 0, 255).astype(np.uint8))
    options = RestoreOptions(photo=PhotoOptions(upscale=1, bg_upsampler="lanczos"),
                             sampling=SamplingOptions(start_step=2, seed=1))
    pipe = RestorePipeline.load(options)
    events: list[dict] = []
    result = pipe.restore_image(read_image(tmp_path / "group.png"), callback=events.append)
    kinds = _kinds(events)
    assert kinds[0] == "faces" and kinds.count("faces") == 1
    assert events[0]["count"] == result.faces == 4 and events[0]["skipped"] == 0
    starts = [e["count"] for e in events if e["event"] == "face_start"]
    ends = [e["count"] for e in events if e["event"] == "face_end"]
    assert sum(starts) == sum(ends) == 4
    assert kinds.count("step") == 2 * len(starts)  # start step 2: two steps per batch of faces


def test_inpaint_takes_masks_in_memory_as_difface_inpaint_takes_a_mask_file(tmp_path):
    options = InpaintOptions(sampling=SamplingOptions(start_step=3, seed=7))
    try:
        pipe = InpaintPipeline.load(options)
    except FileNotFoundError as e:
        pytest.skip(f"no bundled inpainter in this copy of difface: {e}")
    image = read_image(ASTRONAUT)
    hole = np.zeros(image.rgb.shape[:2], bool)
    hole[60:100, 40:150] = True
    mask_file = tmp_path / "mask.png"
    write_image(mask_file, np.repeat(hole[:, :, None].astype(np.float32), 3, axis=2))
    assert cli.main(["inpaint", str(ASTRONAUT), "-o", str(tmp_path / "cli"), "--mask", str(mask_file),
                     "--start-step", "3", "--seed", "7"]) == 0
    events: list[dict] = []
    results = [pipe.inpaint_image(image, hole, callback=events.append),  # bool, float and tensor masks
               pipe.inpaint_image(image, hole.astype(np.float32)),
               pipe.inpaint_image(image, torch.from_numpy(hole)[None].float())]
    assert all(np.array_equal(r.image, results[0].image) for r in results[1:])
    write_image(tmp_path / "mem.png", results[0].image)
    assert (tmp_path / "mem.png").read_bytes() == (tmp_path / "cli" / "astronaut_lq.png").read_bytes()
    x = image.rgb
    # every known pixel beyond the soft edge (2 model pixels: 6 px for 192 px and the 64 px model) is kept
    edge = feathered_mask(torch.from_numpy(hole[None, None].astype(np.float32)), 2 * 192 / 64)[0, 0].numpy() > 0
    assert edge.sum() > hole.sum() and np.array_equal(results[0].image[~edge], x[~edge])
    assert _kinds(events) == ["faces", "face_start"] + ["step"] * 3 + ["face_end"]
    with pytest.raises(ValueError, match="mask is 96x96, the image 192x192"):
        pipe.inpaint_image(image, np.ones((96, 96), bool))


@pytest.mark.slow  # kept out of the default run for its time; .ci/run runs it
def test_the_model_catalogue_imports_without_gradio():
    code = ("import sys, difface.app, difface.app.catalogue as c; import difface.cli; "
            "assert 'gradio' not in sys.modules, 'gradio imported'; "
            "assert c.default_models('restoration')[0].prior is None; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    pytest.importorskip("gradio", reason="the app needs Gradio: pip install 'difface[app]'")
    r = subprocess.run([sys.executable, "-c", "import sys, difface.app as a; a.AppServer; "
                        "print('gradio' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr  # the handlers are imported on first use
