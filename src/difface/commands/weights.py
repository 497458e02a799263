"""`difface weights`: list, download, locate and convert weights files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from difface import weights
from difface.commands import COMMANDS
from difface.config import MODELS
from difface.hub import ASSETS

log = logging.getLogger("difface")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help=COMMANDS["weights"],
                       description="Manage weights files. Cache folder: $DIFFACE_HOME, else "
                       "$XDG_CACHE_HOME/difface, else ~/.cache/difface (files under weights/).")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    wsub.add_parser("list", help="known weights and whether they are in the cache").set_defaults(func=run_list)
    d = wsub.add_parser("download", help="download weights into the cache (verified, atomic)")
    d.add_argument("names", nargs="+", metavar="NAME")
    d.add_argument("--force", action="store_true", help="download again even if present")
    d.set_defaults(func=run_download)
    q = wsub.add_parser("path", help="print the cache path of weights")
    q.add_argument("names", nargs="+", metavar="NAME")
    q.set_defaults(func=run_path)
    c = wsub.add_parser("convert", help="convert an official .pth (or any supported layout) to safetensors",
                        description="Load SRC strictly into its network (architecture from --arch, the "
                        "registry, or inferred from the keys) and save DST as safetensors with the config.")
    c.add_argument("src", help="checkpoint file or registry name")
    c.add_argument("dst", type=Path, help="output .safetensors file")
    c.add_argument("--arch", help="network name (unet_ffhq512, swinir_restoration512, ...); default: inferred")
    c.add_argument("--half", action="store_true", help="store float16 (half the size)")
    c.set_defaults(func=run_convert)


# Kinds of the weights shipped in the package, by their folder (or file) under difface/assets; small64: the
# bundled small model, whose files are named by their role.
_BUNDLED_KINDS = {"mtcnn": "detector", "lpips": "metric", "niqe": "metric"}


def _megabytes(n: int, approx: bool = False) -> str:
    mb = n / 1e6
    text = f"{n / 1e3:.0f} kB" if mb < 1 else f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"
    return ("~" if approx else "") + text


def models_using(name: str, kind: str = "") -> list[str]:
    """The named models of difface.config.MODELS that load the weights `name` (a registry name, or a file of the
    bundled small model "small64/<role>" with `kind` its role: the prior serves every bundled model, the
    estimator the bundled restoration models, the inpainter the bundled inpainting ones)."""
    if name.startswith("small64/"):
        task = {"estimator": "restoration", "inpainter": "inpainting"}.get(kind)
        return [n for n, e in MODELS.items() if e.bundled and (kind == "prior" or e.task == task)]
    return [n for n, e in MODELS.items() if name in e.weights]


def list_rows() -> list[tuple[str, str, str, str, str, str]]:
    """(name, kind, size, status, file, models) of every weights file difface knows: those shipped in the package
    (bundled, offline; their size on disk), then the registry's (cached, with the size on disk, or the size of
    the download); models: the named models that use it (`models_using`), comma-separated."""
    rows = []
    for rel in sorted(weights.bundled_manifest(), key=lambda rel: not rel.startswith("small64/")):
        path = ASSETS / rel
        name = rel.rsplit(".", 1)[0]
        top = rel.split("/")[0].split(".")[0]
        kind = Path(rel).stem if top == "small64" else _BUNDLED_KINDS.get(top, "")
        there = path.is_file()
        rows.append((name, kind, _megabytes(path.stat().st_size) if there else "",
                     "bundled, offline" if there else "missing", f"(package) {rel}",
                     ",".join(models_using(name, kind))))
    for e in weights.REGISTRY.values():
        path = weights.local_path(e.name)
        if path.is_file():
            size, status = _megabytes(path.stat().st_size), "cached"
        else:
            known = e.size or e.approx_size
            size, status = (_megabytes(known, approx=e.size is None) if known else "?"), "not cached"
        rows.append((e.name, e.kind, size, status, e.filename, ",".join(models_using(e.name))))
    return rows


def run_list(args: argparse.Namespace) -> int:
    print(f"cache: {weights.cache_dir()}")
    print(f"{'name':26} {'kind':10} {'size':>8}  {'status':16} {'file':40} models (--model)")
    for name, kind, size, status, file, used_by in list_rows():
        print(f"{name:26} {kind:10} {size:>8}  {status:16} {file:40} {used_by}".rstrip())
        if args.verbose and name in weights.REGISTRY and weights.REGISTRY[name].description:
            e = weights.REGISTRY[name]
            print(f"{'':26} {e.description}\n{'':26} {e.url}")
    print("small64/*: the bundled small model, the default of `difface restore` and `difface inpaint`, offline.\n"
          "not cached: downloaded on first use (or now: difface weights download NAME); ~: about that size.\n"
          "named models (--model NAME; difface.config.MODELS):")
    for name, e in MODELS.items():
        files = " + ".join(e.weights) or "bundled files, offline"
        print(f"  {name:22} {e.task:12} {e.image_size:>4} px  {files}; licence: {e.licence}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        try:
            path = weights.download(name, force=args.force)
            print(path)
        except (KeyError, weights.WeightsUnavailable, ValueError) as e:
            log.error("error: %s", e)
            status = 1
    return status


def run_path(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        try:
            path = weights.local_path(name)
        except KeyError as e:
            log.error("error: %s", e)
            status = 1
            continue
        print(path if path.is_file() else f"{path} (missing)")
    return status


def run_convert(args: argparse.Namespace) -> int:
    if args.dst.suffix != ".safetensors":
        log.error("error: %s: the output must end in .safetensors", args.dst)
        return 2
    try:
        net = weights.load_network(args.src, arch=args.arch)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        log.error("error: %s", e)
        return 1
    weights.save_network(net, args.dst, half=args.half)
    n = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.dst} ({type(net).__name__}, {n:,} parameters{', float16' if args.half else ''})")
    return 0
