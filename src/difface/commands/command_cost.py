"""`difface benchmark --command "restore ..."`: what a `difface restore` command costs per face, on its own code path,
counted in eager fp32 forwards of the prior it loaded, measured in the same process.

The command's arguments are parsed by the CLI's own parser and its options, pipeline and file loop are the
command's (difface.commands.options.restore_options, RestorePipeline.load, difface.pipeline.files.run), so the
backend, precision, sampler and schedule are the ones the command chooses, and its start-of-run line is recorded.
The inputs run one at a time, each through the file loop, and between two of them one eager fp32 forward of the
prior (batch 1, the model's size, t = 399, from a separate torch copy of the same weights file) is timed: faces and
units interleave, so load on the machine touches both alike. Each unit is the second of two forwards in a row: the
first one after a face pays for memory the face's run gave back (a slower forward), which
would flatter the count. The first face is the warm-up (sessions, caches) and is left out; the figures are medians
over the others.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from difface.cli import build_parser
from difface.commands.options import restore_options
from difface.commands.restore import collect
from difface.core import DifFace
from difface.device import set_cpu_threads
from difface.pipeline import RestorePipeline, files


@dataclass
class CommandResult:
    """One command's figures: seconds per warm face (median) and one eager fp32 prior forward (median)."""

    command: str
    line: str
    faces: int
    face_s: float
    unit_s: float
    forwards_per_face: float
    face_runs_s: list[float] = field(default_factory=list)
    unit_runs_s: list[float] = field(default_factory=list)


def cpu_kind() -> str:
    """The CPU's model name and its vector extensions that matter here (avx512 bf16 / vnni, avx2)."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", "unknown CPU", platform.processor()):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx512f", "avx2") if f in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'}), {os.cpu_count()} logical cores"


def benchmark_command(command: str, faces: int | None = None) -> CommandResult:
    """Run `difface <command>` (a `restore` command line; its -o folder is replaced by a temporary one) in this
    process over its inputs (the first `faces` + 1 of them), face by face, with one eager fp32 prior forward timed
    between faces. ValueError when the command is not a restore command or has fewer than 2 inputs."""
    argv = shlex.split(command)
    if not argv or argv[0] != "restore":
        raise ValueError(f"--command: a `restore` command line is measured, got {command!r}")
    args = build_parser(argv).parse_args(argv)
    options = restore_options(args)
    logging.getLogger("difface").info("%s", set_cpu_threads(options.model.threads))
    inputs = collect(args.inputs, videos=not args.aligned)
    inputs = inputs[: faces + 1] if faces else inputs
    if len(inputs) < 2:
        raise ValueError(f"--command: {len(inputs)} input(s); at least 2 are needed (the first is the warm-up)")
    pipe = RestorePipeline.load(options, torch.device("cpu"))
    line = pipe.describe()
    src = pipe.model.sources
    eager = DifFace.from_pretrained(prior=str(src["prior"]), estimator=str(src["estimator"]), device="cpu")
    size = eager.image_size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.full((1,), 399, dtype=torch.long)

    def unit() -> float:
        eager.prior(x, t)  # settles the allocator after a face
        t0 = time.perf_counter()
        eager.prior(x, t)
        return time.perf_counter() - t0

    face_runs, unit_runs = [], []
    with tempfile.TemporaryDirectory(prefix="difface-bench-") as out, torch.inference_mode():
        unit()  # warm the eager copy
        for k, path in enumerate(inputs):
            t0 = time.perf_counter()
            outcome = files.run(pipe, [path], Path(out), progress=False)[0]
            dt = time.perf_counter() - t0
            if not outcome.ok:
                raise ValueError(f"{path}: {outcome.reason}")
            if k:
                face_runs.append(dt)
            unit_runs.append(unit())
    face_s, unit_s = statistics.median(face_runs), statistics.median(unit_runs)
    return CommandResult("difface " + command, line, len(face_runs), face_s, unit_s, face_s / unit_s,
                         face_runs, unit_runs)


def command_table(results: list[CommandResult]) -> str:
    """Markdown: one row per command."""
    rows = ["| command | what it runs | warm faces | seconds per face | eager fp32 prior forward (s) | "
            "eager fp32 prior forwards per face |", "|---|---|---:|---:|---:|---:|"]
    rows += [f"| `{r.command}` | {r.line} | {r.faces} | {r.face_s:.2f} | {r.unit_s:.3f} | "
             f"**{r.forwards_per_face:.2f}** |" for r in results]
    return "\n".join(rows)


def as_dicts(results: list[CommandResult]) -> list[dict]:
    return [asdict(r) for r in results]
