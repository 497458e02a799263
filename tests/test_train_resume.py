"""Checkpoints: a resumed run equals an uninterrupted one; bad images are skipped; CLI errors."""

from __future__ import annotations

import json

import pytest
import torch

from _train_utils import single_thread, tiny_config, write_images
from difface.cli import main
from difface.train.checkpoint import list_checkpoints, load_checkpoint
from difface.train.config import dump_config

_one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    folder = write_images(root / "imgs", 12)
    # 12 images, global batch 8 in micro-batches of 4, flips and EMA: 4 steps cross two epoch ends.
    cfg = tiny_config("prior", folder, data={"flip": True}, optim={"micro_batch": 4},
                      max_steps=4, checkpoint_every=2)
    cfg_file = root / "prior.yaml"
    cfg_file.write_text(dump_config(cfg))
    return root, cfg_file


def _train(*args) -> int:
    return main(["train", "prior", *map(str, args), "--device", "cpu"])


def _losses(run_dir):
    rows = [json.loads(s) for s in (run_dir / "train.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["mse"], r["vb"], r["grad_norm"], r["lr"]) for r in rows]


def test_resume_continues_exactly(setup):
    root, cfg_file = setup
    straight, split = root / "straight", root / "split"
    assert _train("--config", cfg_file, "--out", straight) == 0
    assert _train("--config", cfg_file, "--out", split, "--max-steps", 2) == 0
    assert [p.name for p in list_checkpoints(split)] == ["step_00000002.pt"]
    assert _train("--resume", split, "--max-steps", 4) == 0  # run folder -> newest checkpoint
    a = load_checkpoint(straight / "checkpoints" / "step_00000004.pt")
    b = load_checkpoint(split / "checkpoints" / "step_00000004.pt")
    # Same operations in the same order on the CPU: the tolerance is zero (bit-identical).
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for k, sa in a["optimizer"]["state"].items():
        sb = b["optimizer"]["state"][k]
        assert all(torch.equal(sa[n], sb[n]) for n in ("step", "exp_avg", "exp_avg_sq"))
    assert a["data"] == b["data"] == {"position": 32, "epoch": 2, "offset": 8, "num_items": 12, "seed": 123}
    assert _losses(straight) == _losses(split)
    assert [r[0] for r in _losses(split)] == [1, 2, 3, 4]
    assert (split / "prior.safetensors").is_file()


def test_resume_truncates_log_rows_after_the_checkpoint(setup):
    root, cfg_file = setup
    run = root / "truncate"
    assert _train("--config", cfg_file, "--out", run, "--max-steps", 3, "--set", "checkpoint_every=2") == 0
    (run / "checkpoints" / "step_00000003.pt").unlink()  # as if it died after logging step 3
    assert _train("--resume", run / "checkpoints" / "step_00000002.pt", "--max-steps", 4) == 0
    assert [r[0] for r in _losses(run)] == [1, 2, 3, 4]


def test_cli_refuses_unsafe_starts(setup, capsys):
    root, cfg_file = setup
    run = root / "refuse"
    assert _train("--config", cfg_file, "--out", run, "--max-steps", 1) == 0
    assert _train("--config", cfg_file, "--out", run, "--max-steps", 1) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert _train("--config", cfg_file, "--resume", run, "--set", "optim.lr=0.5") == 2
    assert "optim.lr" in capsys.readouterr().err
    assert _train("--out", run) == 2  # neither --config nor --resume
    assert main(["train", "estimator", "--config", str(cfg_file)]) == 2  # a unet config for an estimator


def test_bad_image_is_skipped(tmp_path):
    folder = write_images(tmp_path / "imgs", 7)
    (folder / "img_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = tiny_config("prior", folder, max_steps=2, log_every=2)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(dump_config(cfg))
    assert _train("--config", cfg_file, "--out", tmp_path / "run") == 0
    row = json.loads((tmp_path / "run" / "train.jsonl").read_text().splitlines()[-1])
    # 8 files, global batch 8, 2 steps: the broken file is drawn once per epoch, so twice
    assert row["skipped_images"] == 2 and row["step"] == 2 and row["loss"] == row["loss"]  # not NaN


def test_export_best_checkpoint(setup, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file

    root, cfg_file = setup
    run = root / "export"
    assert _train("--config", cfg_file, "--out", run) == 0  # checkpoints at steps 2 and 4
    # Validation rows as the loop writes them; step 2 is the better one, step 3 has no checkpoint.
    rows = [{"step": 2, "val_eps_mse": 0.5}, {"step": 3, "val_eps_mse": 0.1}, {"step": 4, "val_eps_mse": 0.7}]
    (run / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _train("--export", run, "--best", "val_eps_mse") == 0
    out = run / "prior_step_2.safetensors"
    assert "best val_eps_mse: 0.5 at step_00000002.pt" in capsys.readouterr().err
    ema = load_checkpoint(run / "checkpoints" / "step_00000002.pt")["ema"]
    got = load_file(out)
    assert got.keys() == ema.keys() and all(torch.equal(got[k], ema[k]) for k in ema)
    meta = safe_open(out, "pt").metadata()
    assert (meta["difface.step"], meta["difface.weights"], meta["difface.t_max"]) == ("2", "ema", "999")
    # The newest checkpoint, exported, is what the run itself exported at its end.
    assert _train("--export", run, "--export-to", root / "last.safetensors") == 0
    last, final = load_file(root / "last.safetensors"), load_file(run / "prior.safetensors")
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)
    capsys.readouterr()
    # Errors: a metric nobody logged, --best on a file, the wrong task, --best without --export.
    assert _train("--export", run, "--best", "psnr_y") == 2
    assert "no kept checkpoint has validation metric 'psnr_y' (metrics logged: val_eps_mse)" in capsys.readouterr().err
    assert _train("--export", run / "checkpoints" / "step_00000004.pt", "--best", "val_eps_mse") == 2
    assert "--best needs a run folder" in capsys.readouterr().err
    assert main(["train", "estimator", "--export", str(run)]) == 2
    assert "a checkpoint of the prior, not of the estimator" in capsys.readouterr().err
    assert _train("--best", "val_eps_mse") == 2
    assert "--best and --export-to go with --export" in capsys.readouterr().err
