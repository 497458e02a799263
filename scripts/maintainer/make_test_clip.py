"""Make a test clip for video restoration: a slow pan and zoom over a group photo, degraded, with a
generated audio track (sine sweep), plus a sidecar JSON with the camera motion (photo -> frame
matrices) and the faces found on the clean photo, for scripts/evaluations/video_flicker.py.

The photos in ../shared/data are research-only: write clips made from them outside the repository
(the default output is /tmp/difface-video/).

    python scripts/maintainer/make_test_clip.py                                   # Solvay 1927, 640x360, 25 fps, 6 s
    python scripts/maintainer/make_test_clip.py --photo ../shared/data/real-world/gfpgan-inputs/whole_imgs/10045.png \\
        --center0 0.40 0.275 --center1 0.44 0.275 --zoom0 1.0 --zoom1 1.05 --seconds 2 -o /tmp/difface-video/three.mp4

The second keeps all three faces of that portrait-format photo whole in every frame (the script prints how
many faces stay "fully in every frame"; a view that cuts every face gives a clip with nothing to restore).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from difface.images import read_image
from difface.video.synth import CameraPath, ClipSpec, Degradation, make_clip

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
DEFAULT_PHOTO = SHARED / "real-world" / "difface-testdata" / "Solvay_conference_1927.png"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="still photo (default: the 1927 Solvay photo)")
    p.add_argument("-o", "--output", type=Path, default=Path("/tmp/difface-video/solvay.mp4"))
    p.add_argument("--size", default="640x360", help="WxH, even (default 640x360)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--center0", type=float, nargs=2, default=(0.3, 0.45), metavar=("X", "Y"),
                   help="start of the pan: view centre as fractions of the photo")
    p.add_argument("--center1", type=float, nargs=2, default=(0.6, 0.5), metavar=("X", "Y"))
    p.add_argument("--zoom0", type=float, default=1.6, help="1 = largest view of the clip's aspect in the photo")
    p.add_argument("--zoom1", type=float, default=2.0)
    p.add_argument("--blur", type=float, default=1.2, help="Gaussian blur sigma, output pixels")
    p.add_argument("--scale", type=float, default=2.0, help="down-sampling factor before upsampling back")
    p.add_argument("--noise", type=float, default=4.0, help="Gaussian noise std, 8-bit levels (new every frame)")
    p.add_argument("--jpeg", type=int, default=60, help="JPEG quality (0: none)")
    p.add_argument("--clean", action="store_true", help="no degradation")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crf", type=int, default=18)
    p.add_argument("--no-faces", action="store_true", help="do not detect the faces of the clean photo (sidecar)")
    args = p.parse_args(argv)

    if not args.photo.is_file():
        print(f"skipped: photo not found at {args.photo} (research-only images live in ../shared/data, "
              "outside the repository)", file=sys.stderr)
        return 2
    photo = np.rint(read_image(args.photo).rgb * 255).astype(np.uint8)
    w, h = (int(v) for v in args.size.lower().split("x"))
    extra = {"photo": str(args.photo)}
    if not args.no_faces:
        from difface.face import detect_faces, get_detector

        dets = detect_faces(photo.astype(np.float32) / 255.0, get_detector("mtcnn"))
        extra["faces"] = dets.to_json()  # boxes and landmarks in photo pixels
    deg = None if args.clean else Degradation(args.blur, args.scale, args.noise, args.jpeg)
    cam = CameraPath(tuple(args.center0), tuple(args.center1), args.zoom0, args.zoom1)
    meta = make_clip(photo, args.output, ClipSpec(size=(w, h), fps=args.fps, seconds=args.seconds, camera=cam,
                     degradation=deg, audio=not args.no_audio, seed=args.seed, crf=args.crf), extra=extra)
    visible = _visible_faces(meta)
    print(f"{args.output}: {w}x{h}, {meta['frames']} frames at {args.fps:g} fps, {meta['seconds']:.2f} s, "
          f"{len(meta.get('faces', []))} faces on the photo, {visible} fully in every frame; "
          f"sidecar {args.output.with_suffix('.json')}")
    return 0


def _visible_faces(meta: dict) -> int:
    """Faces of the sidecar whose box stays inside the frame in every frame."""
    w, h = meta["size"]
    n = 0
    for f in meta.get("faces", []):
        x1, y1, x2, y2 = f["box"]
        ok = True
        for m in np.asarray(meta["matrices"]):
            a = m[:, :2] @ np.array([[x1, x2], [y1, y2]]) + m[:, 2:]
            ok &= a[0].min() >= 0 and a[1].min() >= 0 and a[0].max() <= w - 1 and a[1].max() <= h - 1
        n += bool(ok)
    return n


if __name__ == "__main__":
    sys.exit(main())
