"""--preset fast|official (difface.presets) and fitted schedules (difface.schedules)."""

import argparse
import re

import numpy as np
import pytest
import torch

from difface.commands.options import FLAGS
from difface.config import say_options
from difface.core import BUNDLED_DIR, DifFace
from difface.device import DTYPES
from difface.diffusion.solvers import FewStepSampler, solver_timesteps
from difface.fastplan import MEASURED_FALLBACK, plan_for
from difface.presets import FAST_NFE, FAST_SAMPLER, OFFICIAL_VALUES, Machine, bundled_cpu_backend, resolve, resolve_args
from difface.schedules import ASSETS_FILE, fitted_timesteps, prior_sha256, store_schedule

AVX2 = Machine("cpu", False, ("torch", "onnxruntime", "openvino"))


def test_official_is_todays_default_and_prints_nothing():
    r = resolve("official", {}, AVX2)
    assert r.options == {"backend": "torch", "dtype": "fp32", "fast": False, "sampler": "official", "nfe": None,
                         "schedule": "even", "bg_upsampler": "auto"}
    assert resolve("official", {}, AVX2, upscale=1).options["bg_upsampler"] == "auto"  # x1 official: unchanged
    assert r.line is None and r.fallback is None


def test_fast_per_machine_kind():
    r = resolve("fast", {}, AVX2)
    assert (r.options["backend"], r.options["dtype"], r.options["fast"]) == ("onnxruntime", "fp32", False)
    assert (r.options["sampler"], r.options["nfe"], r.options["schedule"]) == (FAST_SAMPLER, FAST_NFE, "fitted")
    assert r.fallback == MEASURED_FALLBACK  # difface.fastplan decides once the model is loaded
    assert r.line.startswith("preset fast: backend onnxruntime fp32")
    assert "the sampler measured for the model, start and eta (said once the model is loaded)" in r.line
    assert "NFE" not in r.line  # nothing said of a sampler the run might not use
    bf16 = resolve("fast", {}, Machine("cpu", True, ("torch", "onnxruntime"))).options
    assert (bf16["backend"], bf16["dtype"], bf16["fast"]) == ("torch", "bf16", True)
    no_ort = resolve("fast", {}, Machine("cpu", False, ("torch",))).options
    assert (no_ort["backend"], no_ort["dtype"], no_ort["fast"]) == ("torch", "fp32", True)
    cuda = resolve("fast", {}, Machine("cuda", None, ("torch", "onnxruntime"))).options
    assert (cuda["backend"], cuda["dtype"], cuda["fast"]) == ("torch", "fp32", False)


def test_fast_upscales_the_background_with_lanczos_unless_asked():
    r = resolve("fast", {}, AVX2, upscale=2)
    assert r.options["bg_upsampler"] == "lanczos" and "background Lanczos" in r.line
    r = resolve("fast", {}, AVX2, upscale=1)
    assert r.options["bg_upsampler"] == "lanczos" and "background kept as it is (`upscale` 1)" in r.line
    assert "background kept as it is (--upscale 1)" in say_options(r.line, FLAGS)  # as the CLI prints it
    r = resolve("fast", {"bg_upsampler": "realesrgan"}, AVX2, upscale=1)  # asked for: kept
    assert r.options["bg_upsampler"] == "realesrgan" and "background" not in r.line.split("given explicitly")[0]
    assert say_options(r.line, FLAGS).endswith("given explicitly: --bg-upsampler realesrgan")


def test_explicit_options_replace_the_presets_parts():
    r = resolve("fast", {"backend": "torch", "nfe": 8, "device": "cpu"}, AVX2)
    assert (r.options["backend"], r.options["fast"], r.options["nfe"]) == ("torch", True, 8)
    assert r.fallback is None  # an explicit --nfe is never replaced by the official loop: an error instead
    assert "given explicitly: `backend` torch, `nfe` 8" in r.line  # fields, as the Python API names them
    assert "given explicitly: --backend torch, --nfe 8" in say_options(r.line, FLAGS)
    r = resolve("fast", {"sampler": "official"}, AVX2)
    assert (r.options["sampler"], r.options["nfe"], r.options["schedule"]) == ("official", None, "even")
    r = resolve("official", {"dtype": "bf16", "fast": True}, AVX2)
    assert r.options == {**OFFICIAL_VALUES, "dtype": "bf16", "fast": True} and r.line is None
    with pytest.raises(ValueError, match="`preset` must be one of official, fast"):
        resolve("quick", {}, AVX2)


def test_resolve_args_reads_the_arguments_and_never_writes_them():
    ns = argparse.Namespace(preset="official", backend=None, dtype=None, fast=None, sampler=None, nfe=None,
                            schedule=None, device="cpu")
    before = dict(vars(ns))
    first, second = resolve_args(ns), resolve_args(ns)
    assert vars(ns) == before and first == second
    backend = bundled_cpu_backend(None, None, device="cpu") or "torch"  # no prior given: the bundled model
    o = first.options
    assert (o["backend"], o["dtype"], o["fast"], o["sampler"], o["nfe"], o["schedule"]) == (backend, "fp32", False,
                                                                                          "official", None, "even")


def _official(**given) -> argparse.Namespace:
    ns = argparse.Namespace(**{**dict(preset="official", backend=None, dtype=None, fast=None, sampler=None, nfe=None,
                                      schedule=None, device="cpu", prior=None, estimator=None, compile=False), **given})
    return argparse.Namespace(**resolve_args(ns).options)


def test_bundled_model_on_a_cpu_runs_through_onnxruntime_unless_told_otherwise():
    pytest.importorskip("onnxruntime")
    assert _official().backend == "onnxruntime"
    assert _official(backend="torch").backend == "torch"  # the exact reference
    assert _official(backend="openvino").backend == "openvino"
    for torch_only in (dict(dtype="bf16"), dict(fast=True), dict(compile=True)):  # torch options keep torch
        assert _official(**torch_only).backend == "torch"
    assert _official(prior="p.safetensors", estimator="e.safetensors").backend == "torch"  # other models: torch
    assert _official(mask=None).backend == "torch"  # inpainting (has --mask): torch
    assert bundled_cpu_backend(None, None, device="cuda") is None


def test_a_new_run_preset_is_one_entry(monkeypatch, capfd):
    """An entry in RUN_PRESET_TABLE is a `--preset` choice of the commands and sets its options."""
    from difface import presets
    from difface.cli import _command_parser, build_parser
    from difface.commands.options import options_from_args

    monkeypatch.setitem(presets.RUN_PRESET_TABLE, "few4", presets.RunPreset(settings={"sampler": "ddim", "nfe": 4}))
    args = build_parser().parse_args(["restore", "in.png", "-o", "out", "--preset", "few4", "--backend", "torch"])
    s = options_from_args(args).sampling
    assert (s.sampler, s.nfe, s.schedule) == ("ddim", 4, "even")
    app = _command_parser(build_parser(["app"]), ["app"])
    assert "few4" in next(a.choices for a in app._actions if a.dest == "preset")


def test_solver_timesteps_where_rounding_collides():
    assert solver_timesteps(4, 5) == [4, 3, 2, 1, 0]
    assert solver_timesteps(400, 5) == [400, 320, 240, 160, 80]
    for t in range(0, 40):
        for n in range(1, t + 2):
            ts = solver_timesteps(t, n)
            assert len(ts) == n and ts[0] == t and ts[-1] >= 0 and all(a > b for a, b in zip(ts, ts[1:]))
    with pytest.raises(ValueError, match="do not fit"):
        solver_timesteps(3, 5)


def test_schedule_is_found_only_for_the_prior_it_was_fitted_on(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"prior A")
    b.write_bytes(b"prior B")
    store = tmp_path / "fitted.json"
    store_schedule(a, method="ddim", nfe=3, t_start=400, eta=0.0, timesteps=[400, 200, 50], fitted_on="test",
                   path=store)
    files = (store,)
    assert fitted_timesteps(a, method="ddim", nfe=3, t_start=400, files=files) == (400, 200, 50)
    assert fitted_timesteps(b, method="ddim", nfe=3, t_start=400, files=files) is None
    assert fitted_timesteps(a, method="ddim", nfe=3, t_start=480, files=files) is None
    assert fitted_timesteps(a, method="dpmpp2m", nfe=3, t_start=400, files=files) is None
    assert fitted_timesteps(a, method="ddim", nfe=3, t_start=400, eta=1.0, files=files) is None
    a.write_bytes(b"prior A, retrained")  # the same file name with other bytes is another model
    assert fitted_timesteps(a, method="ddim", nfe=3, t_start=400, files=files) is None


def test_bundled_schedule_is_keyed_by_the_bundled_prior():
    if not ASSETS_FILE.is_file():
        pytest.skip("no fitted schedule is bundled")
    ts = fitted_timesteps(BUNDLED_DIR / "prior.safetensors", method=FAST_SAMPLER, nfe=FAST_NFE, t_start=400)
    assert ts is not None and len(ts) == FAST_NFE and ts[0] == 400
    assert prior_sha256(BUNDLED_DIR / "prior.safetensors") == \
        "b235c0857b7d783758428e383d5f07536267c396074b43969605822296c8cd2c"


def test_fitted_schedule_is_never_applied_to_another_model(small_models):
    model = DifFace.from_modules(*small_models)  # no weights file: no schedule can belong to it
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no ddim schedule with 5 evaluations"):
        model.restore(x, start_step=100, eta=0.0, seeds=[1], sampler="ddim", nfe=5, schedule="fitted")
    got = model.restore(x, start_step=10, eta=0.0, seeds=[1], sampler="ddim", nfe=5,
                        schedule="fitted-or-official").result
    official = model.restore(x, start_step=10, eta=0.0, seeds=[1]).result
    assert torch.equal(got, official)


@pytest.mark.parametrize("bf16_cpu", [None, False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["this-cpu", "cpu-without-bf16", "cpu-with-bf16"])
def test_restore_preset_fast_on_the_bundled_model(tmp_path, capfd, monkeypatch, bf16_cpu):
    """The command's result equals the API's at whatever the preset chose (difface.fastplan's plan): on this CPU,
    and on a CPU of either kind (the detection replaced; bf16 is emulated, about 10x slower, on a CPU without bf16
    instructions)."""
    if bf16_cpu is not None:
        monkeypatch.setattr("difface.presets.cpu_has_native_bf16", lambda: bf16_cpu)
    import cv2

    from difface.cli import main
    from difface.images import image_to_tensor, read_image

    if not ASSETS_FILE.is_file():
        pytest.skip("no fitted schedule is bundled")
    src = tmp_path / "in"
    src.mkdir()
    face = cv2.imread(str(BUNDLED_DIR.parents[3] / "examples" / "astronaut_lq.png"))
    cv2.imwrite(str(src / "face.png"), cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA))
    argv = ["restore", str(src), "-o", str(tmp_path / "fast"), "--aligned", "--preset", "fast", "--backend", "torch",
            "--start-step", "100", "--eta", "0", "--seed", "3"]
    assert main(argv) == 0
    err = capfd.readouterr().err
    line, said = [ln for ln in err.splitlines() if ln.startswith("preset fast:")]
    assert "--backend torch" in line
    plan = plan_for(DifFace.from_pretrained(device="cpu"), 100, 0.0)  # what difface.fastplan measured for eta 0
    assert plan.source == "fitted for this prior" or plan.source.startswith("generic, validated on")
    assert said == f"preset fast: sampler {plan.sampler} with {plan.nfe} evaluations from t = 400, eta 0 " \
        f"({plan.source})"
    out = read_image(tmp_path / "fast" / "face.png").rgb
    # the same face through the Python API with the stored schedule, at the precision the line says the preset
    # chose on this machine (bf16 where the CPU has bf16 instructions, else fp32; channels-last either way)
    dtype = re.search(r"backend torch (\w+)", line).group(1)
    assert dtype in ("fp32", "bf16"), line
    model = DifFace.from_pretrained(device="cpu", dtype=dtype, channels_last=True)
    amp = DTYPES[dtype]  # the torch backend runs bf16 as autocast inside restore()
    from difface.core import image_seed

    x = image_to_tensor(read_image(src / "face.png").rgb)
    ref = model.restore(x, start_step=100, eta=0.0, seeds=[image_seed(3, x[0])],
                        sampler=FewStepSampler(model.diffusion.base(), plan.timesteps, plan.sampler, 0.0),
                        dtype=amp).result[0]
    assert np.abs(out - ref.permute(1, 2, 0).numpy()).max() <= 1.5 / 255
    even = model.restore(x, start_step=100, eta=0.0, seeds=[image_seed(3, x[0])], sampler=plan.sampler,
                         nfe=plan.nfe, dtype=amp).result[0]
    assert np.abs(out - even.permute(1, 2, 0).numpy()).max() > 2 / 255  # the plan's schedule, not the even one
