"""The table of named models (difface.config.MODELS) is the one place a model is added: the CLI's --model
choices, the app's menu, `difface weights list` and DifFace.from_pretrained read it."""

from __future__ import annotations

import dataclasses

import pytest

from difface import config, hub
from difface.app.catalogue import ModelCatalogue, default_models
from difface.cli import _command_parser, build_parser
from difface.commands.options import options_from_args
from difface.config import MODELS, ModelOptions, RestoreOptions
from difface.core import DifFace, bundled_model_paths
from difface.pipeline import RestorePipeline

from conftest import run_cli

NEW = "bundled-64-gentle"


@pytest.fixture
def gentle(monkeypatch):
    """A copy of the bundled model under another name, with its own fixed start and eta."""
    entry = dataclasses.replace(MODELS["bundled-64"], start_t=40, eta=0.25, auto=False,
                                label="gentle small model (64 px)", description="the bundled model, gentler")
    monkeypatch.setitem(MODELS, NEW, entry)
    return entry


def test_the_table_is_well_formed():
    for name, e in MODELS.items():
        assert e.task in config.TASKS and e.licence and e.label and e.description, name
        assert all(w in hub.REGISTRY for w in e.weights), name
        assert "non-commercial" in e.licence
    for task in config.TASKS:
        assert MODELS[config.DEFAULT_MODEL[task]].bundled and MODELS[config.DEFAULT_MODEL[task]].task == task
        assert MODELS[config.OFFICIAL_MODEL[task]].task == task
    assert MODELS["official-512"].weights == ("iddpm-ffhq512", "swinir-ffhq512")


def test_a_model_added_in_one_place_is_seen_everywhere(gentle, capsys):
    # the CLI: a --model choice of restore (not of inpaint), and in --help
    restore = _command_parser(build_parser(["restore"]), ["restore"])
    model_arg = next(a for a in restore._actions if "--model" in a.option_strings)
    assert NEW in model_arg.choices and NEW in " ".join(restore.format_help().split())
    inpaint = _command_parser(build_parser(["inpaint"]), ["inpaint"])
    assert NEW not in next(a for a in inpaint._actions if "--model" in a.option_strings).choices
    parsed = build_parser().parse_args(["restore", "in.png", "-o", "out", "--model", NEW])
    assert options_from_args(parsed).model.model == NEW

    # the app's menu
    assert gentle.label in [c.label for c in default_models("restoration")]
    assert gentle.label not in [c.label for c in default_models("inpainting")]

    # difface weights list: the bundled prior and estimator rows name it, and so does the list of models
    status, text = run_cli(["weights", "list"], capsys)
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert status == 0 and NEW in rows["small64/prior"] and NEW in rows["small64/estimator"]
    assert NEW not in rows["small64/inpainter"] and NEW in text.split("named models")[1]

    # the loaded model has the entry's defaults, not the task's
    model = DifFace.from_pretrained(NEW, device="cpu")
    assert (model.default_start_t, model.default_eta, model.default_auto) == (40, 0.25, False)
    assert model.default_start == model.step_for_t(40) == 10


def test_the_pipeline_and_the_app_load_a_named_model_with_its_defaults(gentle):
    pipe = RestorePipeline.load(RestoreOptions(aligned=True, model=ModelOptions(device="cpu", model=NEW)))
    assert pipe.eta == 0.25 and pipe.start_step == pipe.model.step_for_t(40)
    catalogue = ModelCatalogue(device="cpu", restore_models=[c for c in default_models("restoration")
                                                              if c.model == NEW])
    assert catalogue.model_options(gentle.label, "restoration").model == NEW
    eta, start, _ = catalogue.defaults(gentle.label, "restoration")
    assert (eta, start) == (0.25, 10)


def test_files_without_a_name_get_the_official_defaults_of_their_task():
    prior, estimator = bundled_model_paths("restoration")
    files = DifFace.from_pretrained(prior=str(prior), estimator=str(estimator), device="cpu")
    official = MODELS[config.OFFICIAL_MODEL["restoration"]]
    assert (files.default_start_t, files.default_eta, files.default_auto) == (official.start_t, official.eta, False)
    bundled = DifFace.from_pretrained(device="cpu")  # no name, no files: the task's default model
    entry = MODELS[config.DEFAULT_MODEL["restoration"]]
    assert (bundled.default_start_t, bundled.default_eta, bundled.default_auto) == (entry.start_t, entry.eta, True)
    with pytest.raises(ValueError, match="not both"):
        DifFace.from_pretrained("bundled-64", prior=str(prior), estimator=str(estimator))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        DifFace.from_pretrained("nope")
