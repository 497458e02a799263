"""`difface app`: serve the local web app (restore and inpaint in a browser), see difface.app."""

from __future__ import annotations

import argparse
import errno
import hmac
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from difface import app as web
from difface import config  # the tables' names, read when the parser is built
from difface.app.catalogue import ModelChoice, default_models, named_choice
from difface.commands import COMMANDS
from difface.commands.options import option_message
from difface.commands.restore import pixels_arg, threads_arg
from difface.config import DEFAULT_DEVICE, DEFAULT_RUN_PRESET, MODELS
from difface.device import DTYPES, set_cpu_threads
from difface.pipeline import DEFAULT_MAX_PIXELS, OptionError
from difface.presets import app_networks

log = logging.getLogger("difface")

EPILOG = """examples:
  difface app                                   # http://127.0.0.1:7860, this machine only
  difface app --port 8000 --device cuda         # another port, on the GPU
  difface app --port 0                          # any free port (the URL is printed)
  difface app --prior p.safetensors --estimator e.safetensors   # serve your own restoration model
  difface app --inpaint-prior p.safetensors --inpaint-estimator lama.safetensors

  difface app --host 0.0.0.0 --auth-file users.txt   # on the network, with a login (one user:password a line)

The page works offline: it loads nothing from the internet and sends nothing anywhere. It listens on
127.0.0.1 unless --host says otherwise. On any address other than loopback (127.0.0.0/8, ::1,
localhost) it needs a login: --auth USER:PASSWORD or --auth-file FILE (one user:password a line;
prefer the file: a command line is visible to other users of the machine in `ps`), or an explicit
--no-auth (anyone who can reach the machine can then use the app). Passwords are never printed or
logged. One job runs at a time; others wait in a queue and see their place. Needs the `app` extra:
pip install 'difface[app]'."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help=COMMANDS["app"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Start a local web app (Gradio) with a Restore and an Inpaint tab.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="require this login (repeatable); required with a --host other than loopback, unless "
                   "--auth-file or --no-auth is given")
    p.add_argument("--auth-file", metavar="FILE", help="logins, one user:password a line (# comments allowed)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve a non-loopback --host without a login: anyone who can reach it can use the app")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--device", default=DEFAULT_DEVICE,
                   help=f"auto | cpu | cuda | cuda:N | mps (default {DEFAULT_DEVICE})")
    p.add_argument("--preset", default=DEFAULT_RUN_PRESET, choices=list(config.RUN_PRESETS),
                   help="official (default): eager torch fp32; fast: the backend and precision of `difface restore "
                   "--preset fast` on this machine (printed at start; the sampler stays the page's choice); "
                   "--dtype/--backend given explicitly replace its parts")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="network precision (default fp32)")
    p.add_argument("--backend", default=None, choices=list(config.BACKEND_NAMES),
                   help="where the network forwards run (default torch; docs/onnx.md)")
    p.add_argument("--threads", type=threads_arg, default=0, metavar="N|auto",
                   help="CPU threads of the network forwards; default auto: the cores not busy with other programs "
                   "when the app starts, at least 1 (as `difface restore --threads`)")
    p.add_argument("--max-pixels", type=pixels_arg, default=None, metavar="N",
                   help="refuse uploads with more pixels than this, from the file header (default 50M)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, metavar="MB",
                   help="refuse uploads larger than this many MB before storing them (default 200: a 50 MP PNG)")
    p.add_argument("--model", default=None, choices=list(MODELS), metavar="NAME",
                   help="a named model to serve first on its task's tab (its weights and its own defaults), instead "
                   f"of --prior/--estimator for that task: {', '.join(MODELS)} (`difface weights list`). Default: "
                   "the bundled models first, then the official ones found in the weights cache")
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


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_logins(values: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """The (user, password) pairs of --auth and --auth-file; ValueError naming the option, file and line (never
    the password) for one that is not USER:PASSWORD."""
    logins = []
    for k, v in enumerate(values):
        user, sep, password = v.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth (number {k + 1}): expected USER:PASSWORD, both not empty")
        logins.append((user, password))
    if auth_file:
        path = Path(auth_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--auth-file {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user or not password:
                raise ValueError(f"--auth-file {path}, line {n}: expected user:password, both not empty")
            logins.append((user, password))
        if not logins:
            raise ValueError(f"--auth-file {path}: no user:password line")
    return logins


def check_access(host: str, logins: list[tuple[str, str]], no_auth: bool) -> str:
    """What the server does about logins: "login", "open" (loopback without a login) or "open-network" (an
    explicit --no-auth); ValueError when a non-loopback host has neither."""
    if no_auth and logins:
        raise ValueError("--no-auth contradicts --auth / --auth-file: give one or the other")
    if logins:
        return "login"
    if is_loopback(host):
        return "open"
    if no_auth:
        return "open-network"
    raise ValueError(f"--host {host} lets anyone who can reach this machine use the app: give a login with "
                     "--auth USER:PASSWORD or --auth-file FILE (one user:password a line), or --no-auth to serve "
                     "it without one")


def login_checker(logins: list[tuple[str, str]]):
    """Gradio's auth callable: (user, password) -> bool, comparing in constant time."""
    table = [(u.encode(), p.encode()) for u, p in logins]

    def check(user: str, password: str) -> bool:
        u, p = str(user).encode(), str(password).encode()
        ok = False
        for tu, tp in table:  # every entry is compared: the time does not say which user exists
            ok |= hmac.compare_digest(u, tu) & hmac.compare_digest(p, tp)
        return ok

    return check


def _pair(prior: str | None, estimator: str | None, names: tuple[str, str]) -> None:
    if (prior is None) != (estimator is None):
        raise ValueError(f"give both {names[0]} and {names[1]} (or neither)")


def _choice(prior: str, estimator: str) -> ModelChoice:
    """A menu entry for weights given on the command line, labelled by their file names."""
    return ModelChoice(f"{Path(prior).name} + {Path(estimator).name}", prior, estimator)


def run(args: argparse.Namespace) -> int:
    try:
        _pair(args.prior, args.estimator, ("--prior", "--estimator"))
        _pair(args.inpaint_prior, args.inpaint_estimator, ("--inpaint-prior", "--inpaint-estimator"))
        if args.model is not None and (args.inpaint_prior if MODELS[args.model].task == "inpainting" else args.prior):
            given = "--inpaint-prior/--inpaint-estimator" if MODELS[args.model].task == "inpainting" else \
                "--prior/--estimator"
            raise ValueError(f"give --model or {given}, not both: {args.model} names its own weights")
        logins = read_logins(args.auth, args.auth_file)
        access = check_access(args.host, logins, args.no_auth)
        if not args.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb: must be more than 0, got {args.max_upload_mb:g}")
        port = check_port(args.host, args.port)
    except (ValueError, OSError) as e:
        log.error("error: %s", e)
        return 2
    # Gradio keeps uploads and results in GRADIO_TEMP_DIR and serves any file there: a folder of this app's own
    # (unless the user chose one), so that no other Gradio app's files are served, and removed at exit.
    own_tmp = None
    if not os.environ.get("GRADIO_TEMP_DIR"):
        own_tmp = tempfile.mkdtemp(prefix="difface-app-files-")
        os.environ["GRADIO_TEMP_DIR"] = own_tmp
    try:
        return _serve(args, port, logins, access)
    finally:
        if own_tmp:
            shutil.rmtree(own_tmp, ignore_errors=True)


def _serve(args: argparse.Namespace, port: int, logins: list[tuple[str, str]], access: str) -> int:
    try:  # the names of difface.app that need Gradio (imported on first use)
        AppServer, build_app, launch = web.AppServer, web.build_app, web.launch
    except ImportError as e:
        log.error("error: the app needs Gradio (%s): pip install 'difface[app]'", e)
        return 2

    restore_models = inpaint_models = None
    if args.prior:
        restore_models = [_choice(args.prior, args.estimator)] + default_models("restoration")
    if args.inpaint_prior:
        inpaint_models = [_choice(args.inpaint_prior, args.inpaint_estimator)] + default_models("inpainting")
    if args.model is not None:  # the named model first on its tab
        task = MODELS[args.model].task
        first = named_choice(args.model)
        menu = [first] + [c for c in default_models(task) if c.model != args.model]
        restore_models, inpaint_models = (menu, inpaint_models) if task == "restoration" else (restore_models, menu)
    backend, dtype = app_networks(args.preset, args.backend, args.dtype, args.device)
    log.info("%s", set_cpu_threads(args.threads))
    log.info("loading the models ...")
    try:
        server = AppServer(device=args.device, dtype=dtype, backend=backend,
                           max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, restore_models=restore_models,
                           inpaint_models=inpaint_models)
    except (OptionError, ValueError, FileNotFoundError) as e:
        log.error("error: %s", option_message(e) if isinstance(e, OptionError) else e)
        return 2
    if server.inpaint_unavailable:
        log.info("inpainting is not available: %s", server.inpaint_unavailable.strip().replace("\n", "; "))
    demo = build_app(server)
    try:
        launch(demo, args.host, port, block=False, auth=login_checker(logins) if logins else None,
                   max_file_size=f"{args.max_upload_mb:g}mb")
    except OSError as e:
        log.error("error: cannot listen on %s:%d: %s", args.host, port, e)
        server.close()
        return 2
    if access == "open-network":
        log.warning("warning: --no-auth: listening on %s without a login: anyone who can reach this machine "
                    "can upload files, run jobs and download the results", args.host)
    elif access == "login":
        log.info("a login is required (%d user(s))", len(logins))
    shown = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
    print(f"difface app: http://{shown}:{port}/  (Ctrl+C to stop)", flush=True)
    sys.stdout.flush()

    def stop(signum, frame):  # SIGTERM (kill, systemd, docker stop) ends the app as Ctrl+C does: files removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        server.close()
    return 0
