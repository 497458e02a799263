"""`difface benchmark`: per-step, estimator and per-face time and peak memory for chosen settings."""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict
from pathlib import Path

import torch

from difface.atomic import atomic_write_bytes
from difface.backends import RUNTIMES
from difface.benchmark import Setting, as_dicts, backend_table, benchmark, benchmark_backends, results_table
from difface.commands import COMMANDS
from difface.commands.command_cost import as_dicts as command_dicts
from difface.commands.command_cost import benchmark_command, command_table, cpu_kind
from difface.device import pick_device

EPILOG = """examples:
  difface benchmark                                        # 512 networks, eager fp32 vs bf16 on this machine
  difface benchmark --dtype fp32,bf16 --channels-last both --compile both --json bench.json
  difface benchmark --prior unet_small --estimator swinir_small --batch 1,8
  difface benchmark --backend all --json backends.json    # torch / onnxruntime / openvino x precision (CPU)
  difface benchmark --command "restore faces/ -o out --aligned --model official-512 --preset fast" \
                    --command "restore faces/ -o out --aligned --model official-512" --faces 3
Eager fp32 at batch 1 is always measured first; every speed-up is relative to it, in the same run.
--command measures what a `difface restore` command line does, on its own code path (backend, sampler and schedule
as the command chooses them), per warm face, in eager fp32 forwards of its prior timed between its faces (the first
face warms up and is left out); its -o folder is not written (a temporary one is)."""


def _flags(v: str) -> list[bool]:
    return {"no": [False], "yes": [True], "both": [False, True]}[v]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help=COMMANDS["benchmark"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", default="unet_ffhq512", help="prior network name (default unet_ffhq512)")
    p.add_argument("--estimator", default="swinir_restoration512", help="estimator network name")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32,bf16", help="comma list of fp32, bf16, fp16 (default fp32,bf16)")
    p.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    p.add_argument("--channels-last", default="no", choices=["no", "yes", "both"])
    p.add_argument("--compile", default="no", choices=["no", "yes", "both"],
                   help="torch.compile (the compile time is reported separately)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per measurement (median)")
    p.add_argument("--nfe", type=int, default=100, help="prior evaluations per face for the per-face column")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--backend", default="torch", help="torch (default: the settings above), or all / a comma list "
                   "of torch, onnxruntime, openvino: the backend x precision table (CPU, interleaved rounds, "
                   "minimum; --dtype chooses the precisions, --reps the rounds)")
    p.add_argument("--command", action="append", metavar="CMD", help="a `restore ...` command line (quoted) to "
                   "measure per warm face on its own code path; may be given more than once (one row each)")
    p.add_argument("--faces", type=int, default=None, metavar="N",
                   help="with --command: measure at most N warm faces of its inputs (plus the warm-up one)")
    p.set_defaults(func=run)


def run_commands(args: argparse.Namespace) -> int:
    """`--command CMD ...`: difface.commands.command_cost, one row per command."""
    kind = cpu_kind()
    print(f"CPU: {kind}; torch {torch.__version__}")
    results = []
    for command in args.command:
        try:
            results.append(benchmark_command(command, args.faces))
        except ValueError as e:
            print(f"error: {e}")
            return 2
        r = results[-1]
        print(f"{r.command}: {r.face_s:.2f} s per warm face = {r.forwards_per_face:.2f} eager fp32 prior forwards "
              f"({r.unit_s:.3f} s each), {r.faces} faces", flush=True)
    print(command_table(results))
    if args.json:
        payload = {"cpu": kind, "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "results": command_dicts(results)}
        atomic_write_bytes(args.json, json.dumps(payload, indent=2).encode())
    return 0


def run_backends(args: argparse.Namespace) -> int:
    """`--backend all|LIST`: difface.benchmark.benchmark_backends."""
    names = list(RUNTIMES) if args.backend == "all" else args.backend.split(",")
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown:
        print(f"error: --backend: unknown {', '.join(unknown)}; choose from all, {', '.join(RUNTIMES)}")
        return 2
    settings = [(b, d, False) for b in names for d in args.dtype.split(",")
                if RUNTIMES[b].refusal(d, "cpu") is None and d != "fp16"]
    results = benchmark_backends(args.prior, args.estimator, settings, batch=int(args.batch.split(",")[0]),
                                 rounds=max(1, args.reps))
    print(backend_table(results))
    if args.json:
        payload = {"prior": args.prior, "estimator": args.estimator, "results": [asdict(r) for r in results]}
        atomic_write_bytes(args.json, json.dumps(payload, indent=2).encode())
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command:
        return run_commands(args)
    if args.backend != "torch":
        return run_backends(args)
    device = pick_device(args.device)
    settings = [
        Setting(dtype=d, batch=int(b), channels_last=c, compile=k)
        for d, b, c, k in itertools.product(args.dtype.split(","), args.batch.split(","),
                                            _flags(args.channels_last), _flags(args.compile))
    ]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"prior {args.prior}, estimator {args.estimator}")
    results = benchmark(args.prior, args.estimator, settings, device=device, reps=args.reps)
    print(results_table(results, args.nfe))
    if args.json:
        payload = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "prior": args.prior, "estimator": args.estimator, "nfe": args.nfe, "results": as_dicts(results)}
        atomic_write_bytes(args.json, json.dumps(payload, indent=2).encode())
    return 0
