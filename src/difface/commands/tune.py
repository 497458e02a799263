"""`difface tune`: fit the few-step schedule of a model to its own official loop on the user's faces (difface.tune),
and store it for that prior, so that `--schedule fitted` and `--preset fast` use it."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from difface import tune
from difface.atomic import atomic_write_bytes
from difface.commands import COMMANDS
from difface.commands.restore import add_model_argument
from difface.core import DifFace
from difface.device import set_cpu_threads
from difface.fastplan import FITTED
from difface.schedules import user_file

DESCRIPTION = f"""\
Fit the timesteps of a few-step sampler (--sampler, --nfe evaluations) to the official loop of the model, on
low-quality aligned faces of your own (FACES: a folder; any size, each resized to the model size as
`restore --aligned` does; only low-quality faces are needed: the target is the official loop's own result).
From the start step (default: the model's fixed default start; the bundled model's t = 400), eta 0 and seed 0
for every face, it runs the official loop once, then moves one timestep at a time (coordinate descent, steps
{", ".join(map(str, tune.STEPS))}, --passes passes) to minimise the mean squared difference of the few-step
result from the official one, and prints the PSNR to the official loop of the evenly spaced schedule and of the
fitted one.

Only eta 0: the solvers are fitted to the deterministic official loop (a run with eta > 0 has no single result
to match); --eta other than 0 is refused.

The schedule is stored keyed by the SHA-256 of the prior file, in the weights cache's fitted_schedules.json
(now: {{user_file}}), never in the package's shipped file; it is read before the shipped fits, so a refit of the
bundled prior replaces the shipped schedule for you. `difface restore --schedule fitted --sampler S --nfe N` uses
it from that start with eta 0, and `--preset fast` does for {FITTED[0]} with {FITTED[1]} evaluations ("fitted for
this prior"); it is never used for another prior file.

Resumable: the official results and the search state are kept in a work folder under the weights cache
(tune/<key>, keyed by the prior, estimator, sampler, NFE, start and faces), saved after every batch of the official
loop and every improvement and position of the search;
after an interrupt (Ctrl-C), run the same command again and it continues from there.

Example (bundled model, the fast preset's setting):
  difface tune calib_faces/ --sampler dpmpp2m --nfe 6 --start-step 100 --threads 1 --json tune.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tune", help=COMMANDS["tune"], description=DESCRIPTION.replace(
        "{user_file}", str(user_file())), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("faces", metavar="FACES", type=Path, help="folder of aligned low-quality faces (sorted; the "
                   "first --faces of them)")
    add_model_argument(p, "restoration")
    p.add_argument("--prior", help="diffusion prior: registry name or file (with --estimator; default: bundled)")
    p.add_argument("--estimator", help="diffused estimator: registry name or file (with --prior)")
    p.add_argument("--sampler", default=FITTED[0], choices=list(tune.METHODS),
                   help=f"few-step solver to fit (default {FITTED[0]}, the fast preset's)")
    p.add_argument("--nfe", type=int, default=FITTED[1], help=f"network evaluations (default {FITTED[1]})")
    p.add_argument("--start-step", type=int, default=None, metavar="N",
                   help="respaced start step (ddim250 chain; 100 = t 400); default: the model's fixed default start")
    p.add_argument("--eta", type=float, default=0.0, help="only 0 (see above)")
    p.add_argument("--faces", dest="limit", type=int, default=30, metavar="K",
                   help="calibration faces: the first K sorted files of FACES (default 30)")
    p.add_argument("--passes", type=int, default=2, help="coordinate-descent passes (default 2; it stops early "
                   "after a pass without improvement)")
    p.add_argument("--batch", type=int, default=30, help="faces per network batch (default 30)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the cores not busy with other work)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the result (timesteps, MSE, PSNR, "
                   "history) as JSON")
    p.add_argument("--dry-run", "--no-store", dest="store", action="store_false",
                   help="fit and print, but do not store the schedule")
    p.set_defaults(func=run)


def _command_line() -> str:
    return "difface " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["tune"] else \
        "the same difface tune command"


class _Bars:
    """The progress bars: the official loop's steps (reference), then the search's network evaluations, with the
    pass, step size and best PSNR so far (tqdm; shown only on a terminal)."""

    def __init__(self, reference_steps: int, passes: int) -> None:
        self.passes = passes
        self.ref = tqdm(total=reference_steps, desc="official loop", unit="step", disable=None)
        self.search: tqdm | None = None

    def reference_step(self) -> None:
        self.ref.update(1)

    def evaluation(self) -> None:
        if self.search is None:
            self.ref.close()
            self.search = tqdm(total=None, desc="search", unit="eval", disable=None)
        self.search.update(1)

    def position(self, s: tune.SearchState) -> None:
        if self.search is not None:
            step = tune.STEPS[min(s.step_index, len(tune.STEPS) - 1)]
            self.search.set_description(f"search pass {min(s.pass_index + 1, self.passes)}/{self.passes} step {step}")
            self.search.set_postfix_str(f"{tune.psnr_of(s.best_mse):.2f} dB")

    def close(self) -> None:
        self.ref.close()
        if self.search is not None:
            self.search.close()


def run(args: argparse.Namespace) -> int:
    if args.eta != 0:
        print(f"error: --eta {args.eta:g}: only eta 0 can be fitted (the few-step solvers are fitted to the "
              "deterministic official loop)", file=sys.stderr)
        return 2
    if args.model is not None and (args.prior or args.estimator):
        print("error: give --model or --prior/--estimator, not both", file=sys.stderr)
        return 2
    if args.limit < 1 or args.passes < 1 or args.batch < 1:
        print("error: --faces, --passes and --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        files = tune.face_files(args.faces, args.limit)
    except tune.TuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(set_cpu_threads(args.threads), file=sys.stderr)
    try:
        model = DifFace.from_pretrained(args.model, prior=args.prior, estimator=args.estimator, device=args.device)
        start = model.default_start_step if args.start_step is None else args.start_step
        t = tune.check_settings(model, method=args.sampler, nfe=args.nfe, start_step=start)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lq = tune.read_faces(files, model.image_size)
    names = [f.name for f in files]
    key = tune.work_key(model, method=args.sampler, nfe=args.nfe, start_step=start, names=names, lq=lq)
    workdir = tune.work_dir(key)
    if (workdir / "state.json").is_file() or (workdir / "reference.npz").is_file():
        print(f"resuming the fit saved in {workdir}", file=sys.stderr)
    print(f"fitting {args.sampler} with {args.nfe} evaluations from start step {start} (t = {t}), eta 0, on "
          f"{len(files)} faces of {args.faces} ({model.image_size} px); work folder {workdir}", file=sys.stderr)
    bars = _Bars(start * -(-len(files) // args.batch), args.passes)
    try:
        settings = tune.TuneSettings(method=args.sampler, nfe=args.nfe, start_step=start, passes=args.passes,
                                     batch=args.batch)
        result = tune.fit(model, lq, names, settings, workdir=workdir,
                          hooks=tune.Hooks(bars.reference_step, bars.evaluation, bars.position))
    except KeyboardInterrupt:
        bars.close()
        print(f"\ninterrupted; the work done so far (official results, search state) is saved in {workdir}. "
              f"To resume, run {_command_line()} again.", file=sys.stderr)
        return 130
    bars.close()
    if result.resumed:
        print(f"continued a saved fit: {result.network_evaluations_this_run} evaluations this run, "
              f"{result.network_evaluations} in all", file=sys.stderr)
    print(f"even   {result.even_timesteps}: {result.even_psnr_vs_official:.2f} dB to the official loop "
          f"(mse {result.even_mse:.3e})")
    print(f"fitted {result.timesteps}: {result.psnr_vs_official:.2f} dB to the official loop "
          f"(mse {result.mse:.3e}); {result.network_evaluations} search evaluations, {result.seconds:.0f} s")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result.to_json(), indent=1) + "\n").encode())
    if args.store:
        try:
            path = tune.store(result)
        except tune.TuneError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"stored for {Path(result.prior_path).name} (SHA-256 {result.prior_sha256[:12]}...) in {path}: "
              f"`--schedule fitted --sampler {result.method} --nfe {result.nfe} --start-step {result.start_step}`"
              + (" and `--preset fast` at that start" if (result.method, result.nfe) == FITTED else "") + " use it")
    else:
        print("not stored (--dry-run)")
    return 0
