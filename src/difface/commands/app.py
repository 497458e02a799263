"""`difface app`: serve the local web app (restore and inpaint in a browser), see difface.app."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys

from difface.commands.restore import pixels_arg
from difface.device import DTYPES

log = logging.getLogger("difface")

EPILOG = """examples:
  difface app                                   # http://127.0.0.1:7860, this machine only
  difface app --port 8000 --device cuda         # another port, on the GPU
  difface app --port 0                          # any free port (the URL is printed)
  difface app --prior p.safetensors --estimator e.safetensors   # serve your own restoration model
  difface app --inpaint-prior p.safetensors --inpaint-estimator lama.safetensors

The page works offline: it loads nothing from the internet and sends nothing anywhere. It listens on
127.0.0.1 unless --host says otherwise; with --host 0.0.0.0 anyone on your network can use it (there
is no login). One job runs at a time; others wait in a queue and see their place. Needs the `app`
extra: pip install 'difface[app]'."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="local web app: restore and inpaint faces in a browser", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Start a local web app (Gradio) with a Restore and an Inpaint tab.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="network precision (default fp32)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "openvino"],
                   help="where the network forwards run (default torch; docs/onnx.md)")
    p.add_argument("--max-pixels", type=pixels_arg, default=None, metavar="N",
                   help="refuse uploads with more pixels than this, from the file header (default 50M)")
    p.add_argument("--prior", help="restoration prior to serve (with --estimator): registry name or file; it "
                   "becomes the first model of the Restore tab")
    p.add_argument("--estimator", help="restoration estimator to serve (with --prior)")
    p.add_argument("--inpaint-prior", help="inpainting prior to serve (with --inpaint-estimator)")
    p.add_argument("--inpaint-estimator", help="inpainting estimator (LaMa) to serve (with --inpaint-prior)")
    p.set_defaults(func=run)


def check_port(host: str, port: int) -> int:
    """The port to listen on (a free one for 0); OSError with a readable message when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise OSError(f"port {port} on {host} is already in use (another difface app?); choose another "
                              "with --port, or --port 0 for any free port") from None
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        return s.getsockname()[1]


def _pair(prior: str | None, estimator: str | None, names: tuple[str, str]) -> None:
    if (prior is None) != (estimator is None):
        raise ValueError(f"give both {names[0]} and {names[1]} (or neither)")


def _choice(web, prior: str, estimator: str):
    """A menu entry for weights given on the command line, labelled by their file names."""
    from pathlib import Path

    return web.ModelChoice(f"{Path(prior).name} + {Path(estimator).name}", prior, estimator)


def run(args: argparse.Namespace) -> int:
    try:
        _pair(args.prior, args.estimator, ("--prior", "--estimator"))
        _pair(args.inpaint_prior, args.inpaint_estimator, ("--inpaint-prior", "--inpaint-estimator"))
        port = check_port(args.host, args.port)
    except (ValueError, OSError) as e:
        log.error("error: %s", e)
        return 2
    try:
        from difface import app as web
    except ImportError as e:
        log.error("error: the app needs Gradio (%s): pip install 'difface[app]'", e)
        return 2
    from difface.pipeline import DEFAULT_MAX_PIXELS, OptionError

    restore_models = inpaint_models = None
    if args.prior:
        restore_models = [_choice(web, args.prior, args.estimator)] + web.default_models("restoration")
    if args.inpaint_prior:
        inpaint_models = [_choice(web, args.inpaint_prior, args.inpaint_estimator)] + web.default_models("inpainting")
    log.info("loading the models ...")
    try:
        server = web.AppServer(device=args.device, dtype=args.dtype, backend=args.backend,
                               max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, restore_models=restore_models,
                               inpaint_models=inpaint_models)
    except (OptionError, ValueError, FileNotFoundError) as e:
        log.error("error: %s", e)
        return 2
    if server.inpaint_unavailable:
        log.info("inpainting is not available: %s", server.inpaint_unavailable.strip().replace("\n", "; "))
    demo = web.build_app(server)
    try:
        web.launch(demo, args.host, port, block=False)
    except OSError as e:
        log.error("error: cannot listen on %s:%d: %s", args.host, port, e)
        server.close()
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("warning: listening on %s: anyone who can reach this machine can use the app (no login)",
                    args.host)
    shown = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
    print(f"difface app: http://{shown}:{port}/  (Ctrl+C to stop)", flush=True)
    sys.stdout.flush()
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        server.close()
    return 0
