"""Measure `--strength` (difface.strength) on the bundled model: fidelity gain and identity, per knob value.

  faces   held-out validation faces (--val: the 64 px validation split of scripts/maintainer/prepare_celeba64.py,
          faces --skip .. --skip+--count; the auto rule was calibrated on faces 200-249), degraded by each
          --recipes recipe (face k seeded [--seed, k]), restored at every --strengths value and with "auto":
          PSNR-Y gain over the input, and identity with dlib's face descriptor (difface.metrics.identity,
          x4 upscales as the model card): distance result -> truth and result -> input
  photos  the shared real photos (no truth): every face through the `difface restore` pipeline, identity
          distance result -> input only

Identity distance is the Euclidean distance of dlib's 128-d descriptors (dlib's own rule: below 0.6 is
the same person); `over_0.6` is the share of faces beyond it. The report (--json) is rewritten after
every row, so a run cut short keeps what it measured.

  python scripts/maintainer/prepare_celeba64.py --work data64      # once: aligned faces from ../shared/data
  python scripts/evaluations/eval_strength.py faces --val data64/val --count 100 --json docs/results/strength_faces.json
  python scripts/evaluations/eval_strength.py photos --json docs/results/strength_real_photos.json
  python scripts/evaluations/eval_strength.py table --faces docs/results/strength_faces.json \
      --photos docs/results/strength_real_photos.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_estimator import make_inputs  # noqa: E402

from difface.core import DifFace, bundled_model_paths, image_seed  # noqa: E402
from difface.images import IMAGE_EXTENSIONS, collect_inputs, image_to_tensor, read_image  # noqa: E402
from difface.metrics.psnr_ssim import psnr  # noqa: E402
from difface.pipeline import (  # noqa: E402
    ModelOptions,
    PhotoOptions,
    RestoreOptions,
    RestorePipeline,
    SamplingOptions,
    read_input,
)
from difface.strength import strength_start_step, strength_t  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
STRENGTHS = "0,0.025,0.05,0.075,0.1,0.15,0.2,0.3,0.5,0.75,1"
SAME_PERSON = 0.6  # dlib's distance threshold for "the same person"


def need(path: Path, what: str) -> Path:
    if not path.exists():
        raise SystemExit(f"{path}: not found ({what}); this script needs the research data beside the checkout "
                         "(../shared/data, see its README)")
    return path


def embedder():
    try:
        from difface.metrics.identity import DlibEmbedder

        return DlibEmbedder()
    except (ImportError, FileNotFoundError) as e:
        raise SystemExit(f"identity needs dlib: pip install 'difface[metrics]' ({e})") from None


def x4(a: np.ndarray) -> np.ndarray:
    return np.clip(cv2.resize(np.clip(a, 0, 1), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC), 0, 1)


def embed_all(emb, faces, upscale: bool = True) -> np.ndarray:
    return np.stack([emb.embed(x4(f) if upscale else f) for f in faces])


def identity(a: np.ndarray, b: np.ndarray) -> dict:
    """Distances between rows of two descriptor sets: mean, median and the share beyond SAME_PERSON."""
    d = np.linalg.norm(a - b, axis=1)
    return {"mean": float(d.mean()), "median": float(np.median(d)), "over_0.6": float((d > SAME_PERSON).mean())}


def setting(text: str) -> float | str:
    return "auto" if text == "auto" else float(text)


def label(model: DifFace, s) -> dict:
    if s == "auto":
        return {"strength": "auto"}
    step = strength_start_step(model, s)
    return {"strength": s, "t_asked": strength_t(s), "start_step": step,
            "t": int(model.diffusion.timestep_map[step]) if step else 0}


def restore(model: DifFace, lq: np.ndarray, start, seed: int, batch: int) -> tuple[np.ndarray, list[int]]:
    res, steps = [], []
    for i in range(0, len(lq), batch):
        x = torch.cat([image_to_tensor(a) for a in lq[i:i + batch]])
        out = model.restore(x, start_step=start, seeds=[image_seed(seed, im) for im in x])
        res.append(out.result.permute(0, 2, 3, 1).numpy())
        steps += out.start_steps
    return np.concatenate(res), steps


def write(report: dict, path: Path | None) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")


def cmd_faces(args) -> None:
    need(SHARED / "celeba-aligned-89x109", "CelebA, the source of the validation faces")
    folder = need(args.val, "the aligned validation faces: python scripts/maintainer/prepare_celeba64.py --work DIR")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".png")[args.skip: args.skip + args.count]
    truth = np.stack([read_image(folder / n).rgb for n in names])
    p, e = bundled_model_paths()
    model, emb = DifFace.from_pretrained(prior=str(p), estimator=str(e), device="cpu"), embedder()
    gt_ids = embed_all(emb, truth)
    report = {"faces": f"{folder.name} {args.skip}..{args.skip + len(names) - 1}", "count": len(names),
              "seed": args.seed, "metric": "dlib descriptor distance of x4 upscales", "recipes": {}}
    for recipe in args.recipes.split(","):
        lq, hq = make_inputs(recipe, names, truth, args.seed)
        in_psnr = np.array([psnr(a, b, y_channel=True) for a, b in zip(lq, hq)])
        in_ids = embed_all(emb, lq)
        rows = [{"strength": "input", "psnr_y": float(in_psnr.mean()), "id_to_truth": identity(in_ids, gt_ids)}]
        report["recipes"][recipe] = rows
        for s in [setting(v) for v in args.strengths.split(",")]:
            t0 = time.perf_counter()
            row = label(model, s)
            res, steps = restore(model, lq, "auto" if s == "auto" else row["start_step"], args.seed, args.batch)
            gain = np.array([min(psnr(a, b, y_channel=True), 99.0) for a, b in zip(res, hq)]) - in_psnr
            ids = embed_all(emb, res)
            row.update({"steps_mean": float(np.mean(steps)), "steps_max": int(max(steps)),
                        "psnr_y_gain": float(gain.mean()), "share_gain_ge_0": float((gain >= 0).mean()),
                        "id_to_truth": identity(ids, gt_ids), "id_to_input": identity(ids, in_ids),
                        "seconds": round(time.perf_counter() - t0, 1)})
            rows.append(row)
            print(f"{recipe} | strength {s}: steps {row['steps_mean']:.1f}, PSNR-Y {row['psnr_y_gain']:+.2f}, "
                  f"id->truth {row['id_to_truth']['mean']:.3f} (input {rows[0]['id_to_truth']['mean']:.3f}), "
                  f"id->input {row['id_to_input']['mean']:.3f}, {row['seconds']} s", flush=True)
            write(report, args.json)


def photo_faces(pipe: RestorePipeline, files: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, results) face by face: aligned files whole, whole photos as their 64 px crops x4."""
    ins, outs = [], []
    for f in files:
        image = read_input(pipe, f)
        r = pipe.restore_image(image)
        if pipe.options.aligned:  # at 256 px, the size of the photos' x4 crops (dlib's detector is slow on more)
            ins.append(cv2.resize(image.rgb, (256, 256), interpolation=cv2.INTER_AREA))
            outs.append(cv2.resize(r.image, (256, 256), interpolation=cv2.INTER_AREA))
        elif r.crops is not None:
            ins += [x4(c) for c in r.crops]
            outs += [x4(c) for c in r.restored]
    return ins, outs


def cmd_photos(args) -> None:
    base = need(SHARED / "real-world", "the real photos")
    sets = {"aligned": (collect_inputs([str(base / d) for d in args.aligned], extensions=IMAGE_EXTENSIONS), True),
            "whole photos": (collect_inputs([str(base / d) for d in args.whole], extensions=IMAGE_EXTENSIONS), False)}
    emb = embedder()
    report = {"metric": "dlib descriptor distance, result -> input", "aligned": args.aligned, "whole": args.whole,
              "sets": {}}
    for name, (files, aligned) in sets.items():
        opts = RestoreOptions(model=ModelOptions(device="cpu"), photo=PhotoOptions(upscale=1, bg_upsampler="lanczos"),
                              aligned=aligned, batch_size=16)
        pipe = RestorePipeline.load(opts)
        rows, base_ids = [], None
        report["sets"][name] = rows
        for s in [setting(v) for v in args.strengths.split(",")]:
            t0 = time.perf_counter()
            row = label(pipe.model, s)
            start = "auto" if s == "auto" else row["start_step"]
            run = pipe.with_options(RestoreOptions(model=opts.model, sampling=SamplingOptions(start_step=start),
                                                   photo=opts.photo, aligned=aligned, batch_size=16))
            ins, outs = photo_faces(run, files)
            base_ids = embed_all(emb, ins, upscale=False) if base_ids is None else base_ids
            row.update({"files": len(files), "faces": len(outs),
                        "id_to_input": identity(embed_all(emb, outs, upscale=False), base_ids),
                        "seconds": round(time.perf_counter() - t0, 1)})
            rows.append(row)
            print(f"{name} | strength {s}: {len(outs)} faces, id->input {row['id_to_input']['mean']:.3f} "
                  f"({row['id_to_input']['over_0.6']:.0%} over {SAME_PERSON}), {row['seconds']} s", flush=True)
            write(report, args.json)


def _key(row: dict) -> float:
    return -1.0 if row["strength"] == "auto" else float(row["strength"])


def cmd_table(args) -> None:
    """A Markdown table of the face rows of --faces reports (merged by strength), with the real photos' identity."""
    rows: dict = {}
    for path in args.faces:
        report = json.loads(path.read_text())
        base = report["recipes"][args.recipe][0]  # the degraded inputs of these faces
        for r in report["recipes"][args.recipe][1:]:
            rows.setdefault(r["strength"], {**r, "count": report["count"], "base": base["id_to_truth"]})
    photos = {}
    if args.photos:
        for name, prow in json.loads(args.photos.read_text())["sets"].items():
            for r in prow:
                photos.setdefault(r["strength"], {})[name] = r["id_to_input"]["mean"]
    print("| strength | start step (t) | faces | PSNR-Y gain | identity distance to truth (over 0.6) [input's] | "
          "to input | real photos: to input (aligned / whole) |\n|---|---|---:|---:|---:|---:|---:|")
    for s in sorted(rows, key=lambda k: _key({"strength": k})):
        r = rows[s]
        step = f"auto: mean {r['steps_mean']:.1f}, max {r['steps_max']}" if s == "auto" else \
            f"{r['start_step']} (t = {r['t']})"
        ph = photos.get(s, {})
        real = " / ".join(f"{ph[k]:.3f}" for k in ph) or "-"
        inp = f"[{r['base']['mean']:.3f} ({r['base']['over_0.6']:.0%})]"
        print(f"| {s} | {step} | {r['count']} | {r['psnr_y_gain']:+.2f} | {r['id_to_truth']['mean']:.3f} "
              f"({r['id_to_truth']['over_0.6']:.0%}) {inp} | {r['id_to_input']['mean']:.3f} | {real} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    fa = sub.add_parser("faces")
    fa.add_argument("--val", type=Path, required=True, help="aligned 64 px validation faces")
    fa.add_argument("--skip", type=int, default=0)
    fa.add_argument("--count", type=int, default=100)
    fa.add_argument("--recipes", default="celeba-test,severe-x4,mild")
    fa.add_argument("--seed", type=int, default=0)
    fa.add_argument("--batch", type=int, default=50)
    ph = sub.add_parser("photos")
    ph.add_argument("--aligned", nargs="+", default=["difface-testdata/cropped_faces", "gfpgan-inputs/cropped_faces"],
                    help="folders of aligned faces under ../shared/data/real-world")
    ph.add_argument("--whole", nargs="+", default=["difface-testdata/whole_imgs"],
                    help="folders of whole photos under ../shared/data/real-world")
    for p in (fa, ph):
        p.add_argument("--strengths", default=f"auto,{STRENGTHS}")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--json", type=Path)
    tb = sub.add_parser("table", help="the Markdown table of reports written by faces and photos")
    tb.add_argument("--faces", type=Path, nargs="+", required=True)
    tb.add_argument("--recipe", default="celeba-test")
    tb.add_argument("--photos", type=Path)
    args = ap.parse_args()
    if args.cmd == "table":
        return cmd_table(args)
    torch.set_num_threads(args.threads)
    {"faces": cmd_faces, "photos": cmd_photos}[args.cmd](args)


if __name__ == "__main__":
    main()
