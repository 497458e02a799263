"""options -> args_from_options -> the real argument parser -> options_from_args gives the same options."""

from __future__ import annotations

import dataclasses

import pytest

from difface.cli import UsageError, _command_parser, build_parser
from difface.commands.options import FLAGS, args_from_options, option_message, options_from_args
from difface.config import (
    InpaintOptions,
    ModelOptions,
    OptionError,
    PhotoOptions,
    RestoreOptions,
    SamplingOptions,
    VideoSettings,
)
from difface.presets import bundled_cpu_backend


def _round_trip(command: str, options):
    args = args_from_options(options)
    parsed = build_parser().parse_args([command, "in.png", "-o", "out", *args])
    return args, options_from_args(parsed)


RESTORE_CASES = [
    RestoreOptions(),
    RestoreOptions(aligned=True, sampling=SamplingOptions(start_step=0, eta=0.25, seed=7)),
    RestoreOptions(model=ModelOptions("p.safetensors", "e.safetensors", "ddim50", "cpu", "bf16", fast=True),
                   sampling=SamplingOptions(start_step="auto", sampler="dpmpp2m", nfe=6, seed=-3),
                   photo=PhotoOptions(upscale=4, detector="yunet", only_center_face=True, bg_upsampler="lanczos",
                                      draw_boxes=True, max_face_size=300.5),
                   batch_size=3, save_comparison=True, max_pixels=1234),
    RestoreOptions(sampling=SamplingOptions(eta=0.1 + 0.2, sampler="ddim"),  # a float with no short decimal
                   video=VideoSettings(tracking=True, track_seeds=False, smoothing=False, batch_frames=2, crf=30,
                                       resume=False, refuse_vfr=True, max_seconds=12.5)),
    RestoreOptions(video=VideoSettings(tracking=False, track_seeds=False, smoothing=False),
                   model=ModelOptions(compile=True, steps="100")),
    RestoreOptions(ext="webp", quality=80),
    RestoreOptions(aligned=True, ext="jpg"),
    RestoreOptions(model=ModelOptions(model="official-512", device="cpu")),  # --model: a named model
    RestoreOptions(model=ModelOptions(model="bundled-64")),
]


@pytest.mark.parametrize("options", RESTORE_CASES, ids=range(len(RESTORE_CASES)))
def test_restore_round_trip(options):
    args, back = _round_trip("restore", options)
    assert back == options, args


@pytest.mark.parametrize("options", [
    InpaintOptions(),
    InpaintOptions(sampling=SamplingOptions(start_step=37, eta=1.0, seed=99), batch_size=5, save_comparison=True),
    InpaintOptions(model=ModelOptions("a", "b", device="cuda:1", dtype="fp16"),
                   sampling=SamplingOptions(sampler="ddim", nfe=4), max_pixels=10**6),
    InpaintOptions(model=ModelOptions(model="official-256-inpaint")),
])
def test_inpaint_round_trip(options, tmp_path):
    mask = tmp_path / "hole.png"
    mask.write_bytes(b"")  # --mask is checked for existence only when options are made
    options = dataclasses.replace(options, mask=str(mask)) if options.batch_size == 5 else options
    args, back = _round_trip("inpaint", options)
    assert back == options, args


def test_defaults_give_no_arguments():
    # the one exception: the API's torch for the bundled model, where the command line would choose onnxruntime
    torch_named = ["--backend", "torch"] if bundled_cpu_backend(None, None) else []
    assert args_from_options(RestoreOptions()) == torch_named
    assert args_from_options(InpaintOptions()) == []


def test_every_non_default_field_is_written():
    """An options object that differs from the defaults in every field needs a flag for each."""
    options = RESTORE_CASES[2]
    args = args_from_options(options)
    for flag in ("--prior", "--estimator", "--steps", "--device", "--dtype", "--fast", "--start-step", "--sampler",
                 "--nfe", "--seed", "--upscale", "--detector", "--only-center-face", "--bg-upsampler",
                 "--draw-boxes", "--max-face-size", "--batch-size", "--save-comparison", "--max-pixels"):
        assert flag in args


def test_every_flag_of_the_table_is_an_argument_of_restore_or_inpaint():
    parser = build_parser()
    known = {s for cmd in ("restore", "inpaint") for a in _command_parser(parser, [cmd])._actions
             for s in a.option_strings}
    assert set(FLAGS.values()) <= known, set(FLAGS.values()) - known
    fields = {f.name for cls in (ModelOptions, SamplingOptions, PhotoOptions, VideoSettings, RestoreOptions,
                                 InpaintOptions) for f in dataclasses.fields(cls)}
    assert set(FLAGS) - {"output", "preset"} <= fields  # keyed by field names (preset: resolved first)


@pytest.mark.parametrize("make,field,cli,plain", [
    (lambda: SamplingOptions(eta=2), "eta", "--eta: must lie in [0, 1], got 2", "eta: must lie in [0, 1], got 2"),
    (lambda: SamplingOptions(nfe=5), "nfe",
     "--nfe: applies to --sampler ddim or dpmpp2m or dpmpp2m_sde or ddim_extrap; the official loop makes one "
     "evaluation per respaced step (see --steps and --start-step)",
     "nfe: applies to sampler ddim or dpmpp2m or dpmpp2m_sde or ddim_extrap; the official loop makes one "
     "evaluation per respaced step (see steps and start_step)"),
    (lambda: VideoSettings(max_seconds=-1), "max_seconds", "--max-video-seconds: must be at least 0, got -1",
     "max_seconds: must be at least 0, got -1"),
    (lambda: ModelOptions(prior="p.pth"), "estimator",
     "--estimator: give both --prior and --estimator (or neither, for the bundled model)",
     "estimator: give both prior and estimator (or neither, for the bundled model)"),
])
def test_option_errors_name_fields_and_the_cli_says_flags(make, field, cli, plain):
    """OptionError carries the field name; the command line's message (its flags) is the table's business."""
    with pytest.raises(OptionError) as e:
        make()
    assert e.value.option == field
    assert option_message(e.value) == cli
    assert str(e.value) == plain and f"{field}: {e.value.message}" == plain


def test_library_texts_name_options_by_field_and_the_cli_writes_flags():
    from difface.config import say_options

    text = "use a smaller `upscale` or `dtype` bf16; run `difface weights list` (`not_an_option` stays)"
    assert say_options(text, FLAGS) == ("use a smaller --upscale or --dtype bf16; run `difface weights list` "
                                        "(`not_an_option` stays)")
    assert say_options(text, {}) == text  # a caller of the Python API reads the field names


def test_a_named_model_is_one_word_and_not_with_files():
    """--model NAME gives the named model's weights; with --prior/--estimator it is an error naming both flags;
    a model of the other task is refused by the parser (its choices are the task's models)."""
    parsed = build_parser().parse_args(["restore", "in.png", "-o", "out", "--model", "official-512"])
    options = options_from_args(parsed)
    assert options.model.model == "official-512" and options.model.prior is None
    assert options.model.files() == ("iddpm-ffhq512", "swinir-ffhq512") and not options.model.bundled
    both = build_parser().parse_args(["restore", "in.png", "-o", "out", "--model", "official-512",
                                      "--prior", "p.pth", "--estimator", "e.pth"])
    with pytest.raises(OptionError) as e:
        options_from_args(both)
    assert option_message(e.value).startswith("--model: give --model or --prior and --estimator, not both")
    with pytest.raises(UsageError, match="--model: invalid choice official-512; did you mean official-256-inpaint"):
        build_parser().parse_args(["inpaint", "in.png", "-o", "out", "--model", "official-512"])
    with pytest.raises(OptionError, match="^model: official-512 is a model for restoration; for inpainting"):
        InpaintOptions(model=ModelOptions(model="official-512"))
    with pytest.raises(OptionError, match="^model: must be one of official-512, "):
        ModelOptions(model="nope")
