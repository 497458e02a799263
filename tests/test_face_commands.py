"""`difface detect` and `difface data align` end to end (on synthetic images; real faces when present)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from difface.commands import data as data_cmd
from difface.commands import detect as detect_cmd
from difface.images import read_image, write_image

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-world"
CROPPED = DATA / "difface-testdata" / "cropped_faces"


def _run(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_commands_are_registered():
    from difface import cli

    assert "detect" in cli.COMMANDS and "data" in cli.COMMANDS


def test_detect_json_for_blank_and_broken_images(tmp_path):
    write_image(tmp_path / "blank.png", np.full((40, 60, 3), 0.5, np.float32))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "dets.json"
    rc = _run(detect_cmd, ["detect", str(tmp_path / "blank.png"), str(tmp_path / "broken.png"),
                           "--json", str(out), "--draw", str(tmp_path / "drawn")])
    assert rc == 1  # one unreadable image
    doc = json.loads(out.read_text())
    assert doc["detector"] == "mtcnn"
    blank, broken = doc["images"]
    assert blank["faces"] == [] and (blank["width"], blank["height"]) == (60, 40)
    assert "broken.png" in broken["error"]
    assert (tmp_path / "drawn" / "blank.png").is_file()


def test_detect_on_a_real_face(tmp_path):
    files = sorted(CROPPED.glob("*.png"))[:1]
    if not files:
        pytest.skip(f"{CROPPED} not found (shared test data absent)")
    out = tmp_path / "d.json"
    assert _run(detect_cmd, ["detect", str(files[0]), "--json", str(out)]) == 0
    faces = json.loads(out.read_text())["images"][0]["faces"]
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 5 and 0.95 <= faces[0]["score"] <= 1


def test_data_align_small_inputs_and_no_face(tmp_path):
    files = sorted(CROPPED.glob("*.png"))[:2]
    if not files:
        pytest.skip(f"{CROPPED} not found (shared test data absent)")
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in files:  # shrink to CelebA-like 89x109 crops: detection must still work
        rgb = read_image(f).rgb
        write_image(raw / f.name, cv2.resize(rgb[40:480, 70:430], (89, 109), interpolation=cv2.INTER_AREA))
    write_image(raw / "empty.png", np.full((109, 89, 3), 0.3, np.float32))
    out = tmp_path / "aligned"
    assert _run(data_cmd, ["data", "align", str(raw), "-o", str(out), "--size", "64"]) == 1  # empty.png failed
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == sorted(f.name for f in files)
    assert read_image(out / files[0].name).rgb.shape == (64, 64, 3)
    report = json.loads((out / "align_report.json").read_text())
    assert report["written"] == 2 and list(report["skipped"].values()) == ["no face found"]
