"""Forward passes of full-size official architectures filled by `difface-fill-v1`, for checking
against vectors produced by the official code (which this repository does not hold).

The network is built by name (`difface.models.build`), filled with the `difface-fill-v1` rule
(`difface.models.fill_deterministic`, seed 0; the rule the reference vectors were made with) and run in
eval mode, fp32, on the CPU. Inputs come from --inputs (an .npz with the keys below, e.g. a golden
file of the official code) or, without it, are drawn as the reference goldens are
(`torch.Generator().manual_seed(--seed)`): UNets `x` = randn (B, 3, S, S) and `t` (int64); LaMa
`x` = rand (B, 4, S, S) whose 4th channel is binarised (> 0.5) as a mask and the image zeroed under
it. Writes --out (.npz): the inputs, `out`, `config_json`, `filler` = "difface-fill-v1".

    python scripts/maintainer/filler_forward.py lama_inpainting256 --out lama256_ours.npz
    python scripts/maintainer/filler_forward.py unet_ffhq256 --t 10,500 --out unet256_ours.npz
    python scripts/maintainer/filler_forward.py unet_ffhq256 --inputs official_unet256.npz --compare out --atol 1e-4

With --compare KEY the output is compared with the input file's KEY and the largest absolute
difference is printed (exit status 1 when it exceeds --atol).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from difface.models import build, fill_deterministic


def make_inputs(name: str, size: int, batch: int, seed: int, ts: list[int]) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    if name.startswith("lama"):
        x = torch.rand(batch, 4, size, size, generator=g)
        mask = (x[:, 3:] > 0.5).float()
        x = torch.cat([x[:, :3] * (1 - mask), mask], 1)
        return {"x": x.numpy()}
    x = torch.randn(batch, 3, size, size, generator=g)
    t = torch.tensor((ts * batch)[:batch], dtype=torch.int64)
    return {"x": x.numpy(), "t": t.numpy()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="architecture name of difface.models.build, e.g. lama_inpainting256, unet_ffhq256")
    ap.add_argument("--inputs", type=Path, help=".npz with x (and t for UNets); default: drawn from --seed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, help="image size (default: the architecture's)")
    ap.add_argument("--t", default="10", help="UNet timesteps, comma list, cycled over the batch")
    ap.add_argument("--compare", metavar="KEY", help="compare the output with KEY of --inputs")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = fill_deterministic(build(args.name)).eval()
    size = args.size or int(getattr(model.config, "image_size", 256) or 256)
    if args.inputs:
        with np.load(args.inputs) as f:
            data = {k: f[k] for k in f.files}
    else:
        data = make_inputs(args.name, size, args.batch, args.seed, [int(s) for s in args.t.split(",")])
    x = torch.from_numpy(np.asarray(data["x"], np.float32))
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(x) if "t" not in data else model(x, torch.from_numpy(np.asarray(data["t"], np.int64)))
    sec = time.perf_counter() - t0
    out = out.float().numpy()
    print(f"{args.name}: x {tuple(x.shape)} -> out {out.shape}, mean {out.mean():.6f}, std {out.std():.6f}, "
          f"{sec:.1f} s", flush=True)
    status = 0
    if args.compare:
        ref = np.asarray(data[args.compare], np.float32)
        diff = float(np.abs(ref - out).max())
        ok = diff <= args.atol
        print(f"max |ours - {args.compare}| = {diff:.3g} ({'within' if ok else 'OVER'} atol {args.atol:g})")
        status = 0 if ok else 1
    if args.out:
        cfg = getattr(model.config, "to_dict", lambda: {})()
        np.savez(args.out, **data, out=out, config_json=np.array(json.dumps(cfg)),
                 filler=np.array("difface-fill-v1"))
        print(f"wrote {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
