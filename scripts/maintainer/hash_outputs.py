"""SHA-256 of what difface writes for fixed inputs, to show a refactor leaves every output bit-identical.

The inputs ship with the repository (examples/astronaut_lq.png, public domain) or are generated here
deterministically; no image from ../shared/data is read. difface is imported from whatever PYTHONPATH
says, so the same script hashes two trees:

    PYTHONPATH=/path/to/old/src python scripts/maintainer/hash_outputs.py -o docs/results/hashes_before.json
    PYTHONPATH=/path/to/new/src python scripts/maintainer/hash_outputs.py --compare docs/results/hashes_before.json

Items (each output file is one entry "item/relative/path"):
  a_aligned_bundled   a folder of aligned faces, `difface restore --aligned`, the bundled model, its defaults
                      through torch (`--backend torch`: see TORCH; 2 threads: OMP_NUM_THREADS)
                      (and a_aligned_bundled_start12: start step 12, seed 5)
  b_aligned_official  the same faces with filler-weight checkpoints in the official .pth layout (start step 4)
  c_photos            two whole photos (the astronaut and a 2x2 group of it), bundled model, Lanczos background
  d_inpaint           `difface inpaint` on a folder with black holes, the bundled inpainter, its defaults
  e_clip              a 0.6 s synthetic clip (difface.video.synth.make_clip), filler weights; the mp4 and its
                      decoded frames
  f_app               the app's download: AppServer.restore of an aligned face and of a group photo (model
                      defaults) and AppServer.inpaint with a painted mask when an inpainter is offered;
                      called in process, no browser

--compare prints equal/DIFFERENT/missing/new per entry and exits 1 on any difference. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep (set before torch loads its OpenMP runtime): on a shared machine the 2 pinned threads
# would otherwise spin at every barrier for minutes (docs/speed.md, "On a busy machine"); outputs are the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "examples" / "astronaut_lq.png"
# The bundled model's restorations name their backend: on a CPU the CLI would otherwise run them through
# onnxruntime where it is installed (within float32 rounding of torch, not bit for bit), and the hashes would
# say the backend changed, not the code. Trees from before that default accept the flag too.
TORCH = ["--backend", "torch"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_folder(item: str, folder: Path) -> dict[str, str]:
    """{item/relative path: sha256} for every file under `folder`."""
    return {f"{item}/{p.relative_to(folder).as_posix()}": sha(p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(args: list[str]) -> None:
    from difface import cli

    status = cli.main(args)
    if status != 0:
        raise SystemExit(f"difface {' '.join(args)} exited with {status}")


def faces_folder(d: Path) -> Path:
    """Three aligned faces made from the astronaut: itself, mirrored and darker at 128 px, brighter at 96 px."""
    a = cv2.imread(str(ASTRONAUT))
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "astronaut.png"), a)
    cv2.imwrite(str(d / "mirrored_dark.png"), np.rint(cv2.resize(a[:, ::-1], (128, 128)) * 0.85).astype(np.uint8))
    cv2.imwrite(str(d / "bright96.png"),
                np.clip(np.rint(cv2.resize(a, (96, 96), interpolation=cv2.INTER_AREA) * 1.15), 0, 255).astype(np.uint8))
    return d


def group_photo(path: Path) -> Path:
    """A 2x2 group of four faces made from the astronaut (as the app tests build it)."""
    a = cv2.imread(str(ASTRONAUT)).astype(np.float32)
    tiles = [a, a[:, ::-1], np.clip(a * 1.15, 0, 255), np.clip(a * 0.85, 0, 255)]
    img = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    cv2.imwrite(str(path), np.rint(img).astype(np.uint8))
    return path


def filler_checkpoints(d: Path) -> dict[str, Path]:
    """Deterministically filled small networks: official .pth layout (prior, estimator) and safetensors files."""
    from difface.models import build, fill_deterministic
    from difface.weights import save_network

    d.mkdir(parents=True)
    prior, est = fill_deterministic(build("unet_small")), fill_deterministic(build("swinir_small"))
    torch.save({f"module.{k}": v for k, v in prior.state_dict().items()}, d / "prior.pth")
    torch.save({"state_dict": est.state_dict()}, d / "estimator.pth")
    save_network(prior, d / "prior.safetensors")
    save_network(est, d / "est.safetensors")
    return {"prior_pth": d / "prior.pth", "est_pth": d / "estimator.pth",
            "prior": d / "prior.safetensors", "est": d / "est.safetensors"}


def holed_faces(d: Path) -> Path:
    """Two aligned faces with rectangles of exact black (the official 'missing' convention)."""
    a = np.maximum(cv2.imread(str(ASTRONAUT)), 1)  # nothing black but the holes
    d.mkdir(parents=True)
    x = a.copy()
    x[60:110, 40:150] = 0
    cv2.imwrite(str(d / "eyes.png"), x)
    y = cv2.resize(a[:, ::-1], (128, 128), interpolation=cv2.INTER_AREA)
    y[80:115, 30:100] = 0
    cv2.imwrite(str(d / "mouth.png"), y)
    return d


def decoded_frames(path: Path) -> str:
    """sha256 over every decoded frame (rgb24) of a video, in order."""
    import av

    h = hashlib.sha256()
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            h.update(frame.to_ndarray(format="rgb24").tobytes())
    return h.hexdigest()


def item_clip(tmp: Path, ckpt: dict[str, Path]) -> dict[str, str]:
    from difface.video.synth import ClipSpec, make_clip

    face = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    clip = tmp / "clip_in" / "clip.mov"
    clip.parent.mkdir()
    make_clip(face, clip, ClipSpec(size=(192, 192), fps=10, seconds=0.6, degradation=None), sidecar=False)
    out = tmp / "e"
    run_cli(["restore", str(clip), "-o", str(out), "--prior", str(ckpt["prior"]), "--estimator", str(ckpt["est"]),
             "--start-step", "2", "--bg-upsampler", "lanczos", "--upscale", "1"])
    hashes = {"e_clip/input.mov": sha(clip.read_bytes()), "e_clip/input.mov:frames": decoded_frames(clip)}
    hashes.update(hash_folder("e_clip", out))
    hashes["e_clip/clip.mp4:frames"] = decoded_frames(out / "clip.mp4")
    return hashes


def item_app(tmp: Path) -> dict[str, str]:
    from difface.app import AppServer
    from difface.app.handlers import InpaintForm, RestoreForm

    s = AppServer(device="cpu", work_dir=tmp / "app-work")
    try:
        label = next(iter(s.restore_models))
        face = s.restore(str(ASTRONAUT), RestoreForm(label, seed=12345, mode="aligned face", upscale=2))
        photo = s.restore(str(group_photo(tmp / "app_group.png")), RestoreForm(label, seed=12345, mode="whole photo",
                                                                                upscale=2))
        hashes = {"f_app/restore_aligned.png": sha(Path(face["file"]).read_bytes()),
                  "f_app/restore_photo.png": sha(Path(photo["file"]).read_bytes())}
        if s.inpaint_models:
            painted = np.zeros((96, 96), bool)
            painted[30:50, 20:70] = True
            out = s.inpaint(str(ASTRONAUT), painted, None, InpaintForm(next(iter(s.inpaint_models)), "custom", 10,
                                                                       seed=7))
            hashes["f_app/inpaint.png"] = sha(Path(out["file"]).read_bytes())
        return hashes
    finally:
        s.close()


def lap(item: str, _last: list[float] = []) -> None:  # noqa: B006 (the time of the previous call)
    now = time.perf_counter()
    if _last:
        print(f"[hash_outputs] {item}: {now - _last[-1]:.1f} s", file=sys.stderr)
    _last.append(now)


def compute() -> dict[str, str]:
    lap("start")
    hashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="difface-hash-") as t:
        tmp = Path(t)
        faces = faces_folder(tmp / "faces")
        ckpt = filler_checkpoints(tmp / "ckpt")
        run_cli(["restore", str(faces), "-o", str(tmp / "a"), "--aligned", *TORCH])
        hashes.update(hash_folder("a_aligned_bundled", tmp / "a"))
        run_cli(["restore", str(faces), "-o", str(tmp / "a2"), "--aligned", "--start-step", "12", "--seed", "5",
                 *TORCH])
        hashes.update(hash_folder("a_aligned_bundled_start12", tmp / "a2"))
        lap("a")
        run_cli(["restore", str(faces), "-o", str(tmp / "b"), "--aligned", "--prior", str(ckpt["prior_pth"]),
                 "--estimator", str(ckpt["est_pth"]), "--start-step", "4", "--seed", "3", "--save-comparison"])
        hashes.update(hash_folder("b_aligned_official", tmp / "b"))
        lap("b")
        photos = tmp / "photos"
        photos.mkdir()
        cv2.imwrite(str(photos / "astronaut.png"), cv2.imread(str(ASTRONAUT)))
        group_photo(photos / "group.png")
        run_cli(["restore", str(photos), "-o", str(tmp / "c"), "--bg-upsampler", "lanczos", *TORCH])
        hashes.update(hash_folder("c_photos", tmp / "c"))
        lap("c")
        run_cli(["inpaint", str(holed_faces(tmp / "holes")), "-o", str(tmp / "d")])
        hashes.update(hash_folder("d_inpaint", tmp / "d"))
        lap("d")
        hashes.update(item_clip(tmp, ckpt))
        lap("e")
        hashes.update(item_app(tmp))
        lap("f")
    return hashes


def compare(now: dict[str, str], before: dict[str, str]) -> int:
    bad = 0
    for name in sorted(set(now) | set(before)):
        if name not in now:
            verdict = "missing"
        elif name not in before:
            verdict = "new"
        else:
            verdict = "equal" if now[name] == before[name] else "DIFFERENT"
        bad += verdict != "equal"
        print(f"{verdict:9s} {name}")
    print(f"{len(now) + len(set(before) - set(now)) - bad} equal, {bad} not")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, help="write the JSON here (default: stdout)")
    p.add_argument("--compare", type=Path, metavar="FILE", help="compare with an earlier JSON; exit 1 on a difference")
    args = p.parse_args(argv)
    torch.set_num_threads(2)  # fixed, so reductions run the same way on any machine
    os.environ["OMP_NUM_THREADS"] = "2"  # and for the commands, which otherwise choose their own count
    os.environ.setdefault("DIFFACE_HOME", tempfile.mkdtemp(prefix="difface-hash-home-"))  # no user cache read
    import difface

    print(f"difface from {Path(difface.__file__).parent}", file=sys.stderr)
    hashes = compute()
    text = json.dumps(hashes, indent=1, sort_keys=True) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if args.compare:
        return compare(hashes, json.loads(args.compare.read_text()))
    if not args.output:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
