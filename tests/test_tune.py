"""`difface tune` (difface.tune): the fitted schedule is never worse than the even one, is stored for its prior (never
in the package's file) and found by `--schedule fitted`; an interrupted search resumes where it stopped and ends
as an uninterrupted one; eta > 0, missing faces and evaluations that do not fit are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from difface import tune
from difface.commands import tune as tune_command
from difface.core import DifFace
from difface.images import read_image, write_image
from difface.schedules import ASSETS_FILE, fitted_timesteps, prior_sha256, user_file

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"method": "dpmpp2m", "nfe": 3, "start_step": 10, "passes": 1, "batch": 2}  # t = 40: seconds


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A weights cache of the test's own (fits stored there must not reach other tests)."""
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def model() -> DifFace:
    return DifFace.from_pretrained(device="cpu")


def _faces(folder: Path, n: int = 3) -> Path:
    """n aligned faces of sizes other than the model's, made from the example face (crops, flips)."""
    rgb = read_image(ROOT / "examples" / "astronaut_lq.png").rgb
    for i in range(n):
        face = rgb[4 * i: 4 * i + 180, 4 * i: 4 * i + 180]
        face = face[:, ::-1] if i % 2 else face
        t = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None]
        small = torch.nn.functional.interpolate(t, size=(48, 48), mode="area")[0].permute(1, 2, 0).numpy()
        write_image(folder / f"face{i}.png", small)
    return folder


def _lq(tmp_path: Path, model: DifFace, n: int = 3) -> tuple[torch.Tensor, list[str]]:
    files = tune.face_files(_faces(tmp_path / "faces", n))
    return tune.read_faces(files, model.image_size), [f.name for f in files]


@pytest.mark.slow  # 4-6 s: with the slow checks (the default run stays under 4 minutes)
def test_fit_is_never_worse_than_even_and_is_found_for_its_prior(tmp_path, home, model):
    lq, names = _lq(tmp_path, model)
    assert lq.shape == (3, 3, 64, 64) and -0.1 <= float(lq.min()) and float(lq.max()) <= 1.1  # bicubic, as restore
    shipped = ASSETS_FILE.read_bytes()
    r = tune.fit(model, lq, names, tune.TuneSettings(**SETTINGS))
    assert r.mse <= r.even_mse and r.psnr_vs_official >= r.even_psnr_vs_official
    assert r.timesteps[0] == r.t_start == 40 and r.timesteps == sorted(set(r.timesteps), reverse=True)
    assert r.even_timesteps == [40, 27, 13] and r.network_evaluations > 0 and not r.resumed
    path = tune.store(r)
    assert path == user_file() and path.is_relative_to(home) and ASSETS_FILE.read_bytes() == shipped
    prior = model.sources["prior"]
    assert r.prior_sha256 == prior_sha256(prior)
    assert fitted_timesteps(prior, method="dpmpp2m", nfe=3, t_start=40) == tuple(r.timesteps)
    # the cache's file is read before the shipped one: a refit of the bundled prior wins
    plan = model.plan(start_step=10, eta=0.0, sampler="dpmpp2m", nfe=3, schedule="fitted")
    assert plan.fixed.timesteps == tuple(r.timesteps) and plan.fixed.source == "fitted for this prior"
    out = model.restore(lq[:1], plan, seeds=[0]).result
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


@pytest.mark.slow  # 10-15 s each: the resumes run with the slow checks
def test_an_interrupted_fit_resumes_and_ends_as_an_uninterrupted_one(tmp_path, home, model):
    lq, names = _lq(tmp_path, model, 2)
    whole = tune.fit(model, lq, names, tune.TuneSettings(**SETTINGS))
    work = tmp_path / "work"
    calls = {"n": 0}

    def stop_after_16() -> None:
        calls["n"] += 1
        if calls["n"] == 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune.fit(model, lq, names, tune.TuneSettings(**SETTINGS), workdir=work,
                 hooks=tune.Hooks(on_eval=stop_after_16))
    assert (work / "reference.npz").is_file() and (work / "state.json").is_file()
    ref_steps = []
    again = tune.fit(model, lq, names, tune.TuneSettings(**SETTINGS), workdir=work,
                     hooks=tune.Hooks(on_reference_step=lambda: ref_steps.append(1)))
    assert again.resumed and ref_steps == []  # the official results were kept
    assert again.network_evaluations_this_run < whole.network_evaluations - 5  # the memo is lost, the search kept
    assert again.timesteps == whole.timesteps and again.mse == pytest.approx(whole.mse, rel=1e-6)
    assert again.network_evaluations >= whole.network_evaluations  # the interrupted run's work counted too
    done = tune.fit(model, lq, names, tune.TuneSettings(**SETTINGS), workdir=work)  # finished: nothing left to do
    assert done.network_evaluations_this_run <= SETTINGS["nfe"] and done.timesteps == whole.timesteps


def test_settings_that_cannot_be_fitted_are_refused(tmp_path, model):
    with pytest.raises(tune.TuneError, match="only eta 0"):
        tune.check_settings(model, method="dpmpp2m", nfe=6, start_step=100, eta=0.5)
    with pytest.raises(tune.TuneError, match="use at most 4"):
        tune.check_settings(model, method="dpmpp2m", nfe=6, start_step=5)
    with pytest.raises(tune.TuneError, match="no such folder"):
        tune.face_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(tune.TuneError, match="no faces found"):
        tune.face_files(tmp_path / "empty")


def test_command_refuses_eta_and_missing_faces(tmp_path, capsys):
    faces = _faces(tmp_path / "faces", 1)
    status, out = run_cli(["tune", faces, "--eta", "0.5"], capsys)
    assert status == 2 and "only eta 0" in out
    status, out = run_cli(["tune", tmp_path / "nothing"], capsys)
    assert status == 2 and "no such folder" in out
    (tmp_path / "empty").mkdir()
    status, out = run_cli(["tune", tmp_path / "empty"], capsys)
    assert status == 2 and "no faces found" in out
    status, out = run_cli(["tune", faces, "--start-step", "5", "--nfe", "6"], capsys)
    assert status == 2 and "use at most 4" in out


def test_command_help(capsys):
    status, out = run_cli(["tune", "--help"], capsys)
    assert status == 0
    for words in ("eta 0", "--dry-run", "--nfe", "--start-step", "run the same command again", "SHA-256"):
        assert words in out


@pytest.mark.slow  # 10-15 s each: the resumes run with the slow checks
def test_command_resumes_after_ctrl_c_and_stores_for_restore(tmp_path, home, capsys, monkeypatch):
    faces = _faces(tmp_path / "faces", 2)
    args = ["tune", faces, "--nfe", "3", "--start-step", "10", "--passes", "1", "--threads", "1",
            "--json", tmp_path / "fit.json"]
    restore = ["restore", faces, "-o", tmp_path / "out", "--aligned", "--sampler", "dpmpp2m", "--nfe", "3",
               "--schedule", "fitted", "--start-step", "10", "--eta", "0"]
    status, out = run_cli(restore, capsys)
    assert status != 0 and "difface tune" in out  # nothing fitted yet for this start
    real = tune_command._Bars.evaluation
    calls = {"n": 0}

    def interrupt_at_4(self) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(tune_command._Bars, "evaluation", interrupt_at_4)
    status, out = run_cli(args, capsys)
    assert status == 130 and "To resume" in out and not user_file().exists()
    monkeypatch.setattr(tune_command._Bars, "evaluation", real)
    status, out = run_cli(args, capsys)
    assert status == 0, out
    assert "resuming the fit saved in" in out and "continued a saved fit" in out and "stored for prior" in out
    assert "even   [40, 27, 13]" in out and "fitted [40" in out and (tmp_path / "fit.json").is_file()
    status, out = run_cli(restore, capsys)
    assert status == 0, out  # --schedule fitted is an error where none was fitted for the prior (above)
    assert len(list((tmp_path / "out").rglob("*.png"))) >= 2
    status, out = run_cli(["tune", faces, "--nfe", "2", "--start-step", "10", "--passes", "1", "--dry-run"], capsys)
    assert status == 0 and "not stored" in out


@pytest.mark.slow  # 10-15 s each: the resumes run with the slow checks
def test_an_interrupted_reference_keeps_its_finished_batches(tmp_path, home, model):
    lq, names = _lq(tmp_path, model, 2)
    work, steps = tmp_path / "work", []

    def stop_in_second_batch() -> None:
        steps.append(1)
        if len(steps) == 15:  # start step 10: the first face's 10 steps are done
            raise KeyboardInterrupt

    settings = {**SETTINGS, "batch": 1}
    with pytest.raises(KeyboardInterrupt):
        tune.fit(model, lq, names, tune.TuneSettings(**settings), workdir=work,
                 hooks=tune.Hooks(on_reference_step=stop_in_second_batch))
    assert (work / "reference_part.npz").is_file() and not (work / "reference.npz").exists()
    steps.clear()
    r = tune.fit(model, lq, names, tune.TuneSettings(**settings), workdir=work,
                 hooks=tune.Hooks(on_reference_step=lambda: steps.append(1)))
    assert len(steps) == 10 and r.resumed and r.reference_evaluations == 10  # only the second face's loop
    assert (work / "reference.npz").is_file() and not (work / "reference_part.npz").exists()
    with np.load(work / "reference.npz") as z:
        kept = torch.from_numpy(z["out"])
    torch.testing.assert_close(kept, tune.official_reference(model, lq, 10, 1), atol=1e-6, rtol=0)
