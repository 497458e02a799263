"""Figures of docs/model-card.md for a DifFace model (default: the bundled one).

  docs/images/prior_samples.png       samples of the prior: DDIM from pure noise; for a prior trained only up to
                                      t_max < 999 (difface.t_max), DDIM from t = min(t_max, 480) of a flat gray
                                      image (x_t = sqrt(abar) * 0 + sqrt(1 - abar) * noise: 90% of the
                                      variance is noise there), the closest it comes to an unconditional sample
  docs/images/val_restorations.png    rows: degraded input | estimator | DifFace at each --settings START:ETA | truth

  python scripts/maintainer/make_model_card_figures.py --lq celeba64/val_celebatest/lq --hq celeba64/val_celebatest/hq
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.core import DifFace
from difface.diffusion import Diffusion, EpsDenoiser, generator_noise, sample_loop
from difface.images import image_to_tensor, read_image, write_image

ROOT = Path(__file__).resolve().parents[2]


def grid(rows: list[np.ndarray], scale: int = 2, pad: int = 2) -> np.ndarray:
    """rows of (N, S, S, 3) arrays -> one image, each tile enlarged `scale` times (nearest)."""
    s = rows[0].shape[1] * scale
    n = max(len(r) for r in rows)
    out = np.ones((len(rows) * (s + pad) + pad, n * (s + pad) + pad, 3), np.float32)
    for i, r in enumerate(rows):
        for j, tile in enumerate(r):
            big = cv2.resize(tile, (s, s), interpolation=cv2.INTER_NEAREST)
            out[pad + i * (s + pad): pad + i * (s + pad) + s, pad + j * (s + pad): pad + j * (s + pad) + s] = big
    return out


@torch.inference_mode()
def prior_samples(model: DifFace, n: int, steps: str = "ddim50") -> np.ndarray:
    """n samples, seeds 0..n-1 (module docstring: from pure noise, or from t <= t_max of flat gray)."""
    s = model.image_size
    noise = generator_noise([torch.Generator().manual_seed(k) for k in range(n)])
    if model.t_max is None or model.t_max >= 999:
        d = Diffusion.create(1000, "linear", steps)
        x = noise(torch.zeros(n, 3, s, s))
        x = sample_loop(EpsDenoiser(model.prior, d), d, x, d.num_timesteps, eta=0.0, noise_fn=noise)
    else:
        d = model.diffusion
        start = model.step_for_t(min(model.t_max, 480))
        gray = torch.zeros(n, 3, s, s)
        x = d.q_sample(gray, torch.full((n,), start, dtype=torch.long), noise(gray))
        x = sample_loop(EpsDenoiser(model.prior, d), d, x, start, eta=0.0, noise_fn=noise)
    return (x * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior")
    ap.add_argument("--estimator")
    ap.add_argument("--lq", type=Path, required=True)
    ap.add_argument("--hq", type=Path, required=True)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--settings", default="20:0,40:0.5,100:0.5",
                    help="comma list of START:ETA rows (START a step or auto)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = DifFace.from_pretrained(prior=args.prior, estimator=args.estimator, device="cpu")
    samples = prior_samples(model, 16)
    write_image(args.out / "prior_samples.png", grid([samples[:8], samples[8:]]))
    names = sorted(p.name for p in args.lq.glob("*.png"))[: args.count]
    lq = torch.cat([image_to_tensor(read_image(args.lq / n).rgb) for n in names])
    hq = np.stack([read_image(args.hq / n).rgb for n in names])
    to_np = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    rows = [to_np(lq), to_np(model.restore(lq, start_step=0).result)]
    for item in args.settings.split(","):
        start, eta = item.split(":")
        n = start if start == "auto" else int(start)
        rows.append(to_np(model.restore(lq, start_step=n, eta=float(eta), seeds=list(range(len(lq)))).result))
    rows.append(hq)
    write_image(args.out / "val_restorations.png", grid(rows))
    print(f"wrote {args.out / 'prior_samples.png'} and {args.out / 'val_restorations.png'}")


if __name__ == "__main__":
    main()
