import json
import shutil

import cv2

from difface.cli import main

from conftest import shared_data


def test_shared_transform_aligns_every_photo_with_one_matrix(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    for f in sorted(shared_data("celeba-aligned-89x109").glob("*.jpg"))[:6]:
        shutil.copy(f, src / f.name)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    status = main(["data", "align", str(src), "-o", str(out), "--size", "32", "--shared-transform", "3"])
    assert status == 1  # broken.jpg failed; the others are aligned
    report = json.loads((out / "align_report.json").read_text())
    info = report["shared_transform"]
    assert info["photos_measured"] == 3 and info["photo_size"] == [109, 89]
    assert info["mean_landmark_residual_pct_eye_distance"] < 20
    assert report["written"] == 6 and list(report["skipped"]) == [str(src / "broken.jpg")]
    assert all(cv2.imread(str(p)).shape == (32, 32, 3) for p in out.glob("*.png"))
