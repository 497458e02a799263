"""`strength` (difface.strength) and the end-of-run face summary (difface.pipeline.summary): the option's range
and its exclusivity with `start_step`, where it puts the start on real chains, and what the real command says
after a run (how many faces the model changed and by how much, the one-time hint for large faces)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from difface.config import InpaintOptions, OptionError, RestoreOptions, SamplingOptions
from difface.core import DifFace
from difface.images import LoadedImage
from difface.pipeline import Outcome, RestorePipeline
from difface.pipeline.summary import MARKER, face_summary, face_totals, note_large_faces
from difface.strength import parse_strength, strength_start_step
from difface.weights import cache_dir

from conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # public-domain astronaut
FACE, PHOTO = EXAMPLES / "astronaut_face.png", EXAMPLES / "astronaut_lq.png"


@pytest.fixture(scope="module")
def bundled() -> DifFace:
    return DifFace.from_pretrained(task="restoration", device="cpu")


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "strong", True])
def test_strength_outside_its_range_is_refused(value):
    with pytest.raises(OptionError) as e:
        SamplingOptions(strength=value)
    assert e.value.option == "strength"


def test_strength_and_start_step_together_are_refused():
    for strength in (0.2, "auto"):
        with pytest.raises(OptionError, match="not both") as e:
            SamplingOptions(start_step=10, strength=strength)
        assert e.value.option == "strength"
    with pytest.raises(OptionError, match="restoration") as e:
        InpaintOptions(sampling=SamplingOptions(strength=0.2))
    assert e.value.option == "strength"
    assert parse_strength(" AUTO ") == "auto" and parse_strength("0.25") == 0.25
    with pytest.raises(ValueError):
        parse_strength("lots")


def test_strength_is_a_share_of_t_400_on_any_chain(bundled):
    tmap = bundled.diffusion.timestep_map  # ddim250: t = 4 k
    assert strength_start_step(bundled, None) is None and strength_start_step(bundled, "auto") is None
    assert strength_start_step(bundled, 0) == 0
    assert int(tmap[strength_start_step(bundled, 1)]) == 400 and strength_start_step(bundled, 1) == 100
    assert int(tmap[strength_start_step(bundled, 0.2)]) == 80
    assert strength_start_step(bundled, 0.001) == 1  # any strength above 0 diffuses
    coarse = DifFace.from_pretrained(task="restoration", device="cpu", steps="ddim50")  # t = 20 k
    step = strength_start_step(coarse, 0.2)
    assert abs(int(coarse.diffusion.timestep_map[step]) - 80) <= 10


def test_pipeline_takes_the_start_step_from_the_strength():
    default = RestorePipeline.load(RestoreOptions(aligned=True))
    assert default.start_step == "auto"  # no strength: the model's default, as before
    pipe = RestorePipeline.load(RestoreOptions(aligned=True, sampling=SamplingOptions(strength=0.05)))
    assert pipe.start_step == 5 and "strength 0.05: start step 5 of ddim250 (t = 20 of 1000)" in pipe.describe()
    face = cv2.cvtColor(cv2.imread(str(FACE)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    r = pipe.restore_aligned([LoadedImage(face, None, 8, False)])[0]
    assert r.start_steps == [5]
    assert r.changes[0] == pytest.approx(np.abs(r.image - face).mean() * 255, abs=0.05)  # 64 px: model size


def test_cli_refuses_a_bad_strength_before_any_work(tmp_path, capsys):
    status, err = run_cli(["restore", FACE, "-o", tmp_path / "a", "--aligned", "--strength", "1.5"], capsys)
    assert status == 2 and "--strength: must lie in [0, 1]" in err
    status, err = run_cli(["restore", FACE, "-o", tmp_path / "b", "--aligned", "--strength", "0.1", "--start-step",
                        "3"], capsys)
    assert status == 2 and "--strength: give --strength or --start-step, not both" in err
    status, err = run_cli(["restore", FACE, "-o", tmp_path / "c", "--aligned", "--strength", "some"], capsys)
    assert status == 2 and "expected a number in [0, 1] or 'auto'" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _said_change(text: str) -> float:
    return float(re.search(r"mean change ([0-9.]+) gray levels", text)[1])


def test_summary_of_a_sharp_face_says_the_model_left_it(tmp_path, capsys):
    status, out = run_cli(["restore", FACE, "-o", tmp_path / "out", "--aligned"], capsys)
    assert status == 0, out
    assert "1 face: none needed the diffusion model (start step 0): left nearly as it was" in out
    assert "--strength" in out  # what to do for more
    before = cv2.imread(str(FACE)).astype(np.float64)
    after = cv2.imread(str(tmp_path / "out" / "astronaut_face.png")).astype(np.float64)
    assert _said_change(out) == pytest.approx(np.abs(after - before).mean(), abs=0.3)  # the file: 8-bit rounding


def test_summary_of_damaged_and_forced_faces(tmp_path, capsys):
    status, out = run_cli(["restore", PHOTO, "-o", tmp_path / "auto", "--upscale", "1"], capsys)
    steps = [int(k) for k in re.search(r"start step auto: ([0-9, ]+)", out)[1].split(",")]
    assert status == 0 and steps[0] > 0  # the damaged photo: auto diffuses its face
    assert "1 face: 1 restored by the diffusion model (mean change" in out
    crops = sorted((tmp_path / "auto" / "cropped_faces").glob("*.png"))
    a, b = (cv2.imread(str(p)).astype(np.float64) for p in (crops[0], tmp_path / "auto" / "restored_faces" /
                                                             crops[0].name))
    assert _said_change(out) == pytest.approx(np.abs(a - b).mean(), abs=0.3)
    status, out = run_cli(["restore", FACE, FACE.parent / "astronaut_lq.png", "-o", tmp_path / "fixed", "--strength",
                        "0.05", "--aligned"], capsys)
    assert status == 0 and "2 faces: 2 restored by the diffusion model" in out and "needed" not in out
    assert "far above" not in out  # a strength is a knowing choice: no warning that the start is high


@pytest.mark.slow  # two whole-photo runs on a 1024 px face
def test_large_faces_get_the_official_models_hint_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))
    big = tmp_path / "big.png"  # an aligned face of 256 px: 4x the bundled model
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(FACE)), (256, 256), interpolation=cv2.INTER_CUBIC))
    hint = "difface weights download iddpm-ffhq512 swinir-ffhq512"
    status, out = run_cli(["restore", big, "-o", tmp_path / "o1", "--aligned"], capsys)
    assert status == 0 and hint in out and "up to 256 px" in out
    assert (cache_dir() / MARKER).is_file()
    status, out = run_cli(["restore", big, "-o", tmp_path / "o2", "--aligned"], capsys)
    assert status == 0 and hint not in out and "1 face:" in out  # the summary stays, the hint does not
    status, out = run_cli(["restore", FACE, "-o", tmp_path / "o3", "--aligned"], capsys)
    assert hint not in out


def test_small_faces_get_no_hint_and_kept_outputs_count_no_faces(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))
    small = Outcome(Path("a.png"), Path("o/a.png"), True, faces=2, start_steps=(0, 7), changes=(1.0, 9.0),
                    face_sides=(120.0, 200.0))
    kept = Outcome(Path("b.png"), Path("o/b.png"), True, kept=True)
    failed = Outcome(Path("c.png"), None, False, "bad", start_steps=(3,), changes=(50.0,))
    totals = face_totals([small, kept, failed], model_size=64)
    assert totals == [2, 1, 9.0, 1.0, 0, 200.0]
    assert face_summary(totals) == ["2 faces: 1 restored by the diffusion model (mean change 9.0 gray levels of "
                                    "255); 1 did not need it (start step 0): left nearly as it was, mean change 1.0 "
                                    "gray levels of 255"]
    assert not note_large_faces(totals, 64, bundled=True) and not (cache_dir() / MARKER).exists()
    large = face_totals([small], model_size=32)  # 4 x 32 = 128: one face at 200 px
    assert not note_large_faces(large, 32, bundled=False)  # the official models: nothing to suggest
    assert note_large_faces(large, 32, bundled=True) and not note_large_faces(large, 32, bundled=True)
