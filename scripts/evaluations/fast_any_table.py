"""Markdown table of scripts/evaluations/eval_fast_any.py results (docs/speed.md, "Few steps at any start and eta").

usage: python scripts/evaluations/fast_any_table.py docs/results/fast_any_*.json
       python scripts/evaluations/fast_any_table.py --transfer FILES   # one row per prior: what `fast` runs
           (the results' `fast` rows) at eta 0, at the default eta 0.5 and for inpainting, against that prior's
           own official loop (LPIPS where the files have it: eval_fast_any.py --alexnet); FILES named first give
           the priors' order
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def case(rep: dict) -> str:
    start = "auto" if rep["start"] == "auto" else f"step {rep['start']}"
    return f"{rep['task']} {start}, eta {rep['eta']:g}, {rep['prior_file']} ({rep['prior_sha256'][:8]}), " \
           f"{rep['count']} faces"


def rows(rep: dict) -> list[str]:
    out = []
    for r in rep["results"]:
        vs = "reference" if r["setting"] == "official" else f"{r['psnr_vs_official']:.2f}"
        nfe = f"{r['nfe_mean']:.2f}"
        gate = "" if "gates" not in r else ("all met" if r["meets_gates"] else
                                            "misses " + ", ".join(k for k, v in r["gates"].items() if not v))
        out.append(f"| {case(rep)} | {r['setting']} | {nfe} | {vs} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | "
                   f"{r['niqe_x4']:.2f} | {gate} |")
        sub = r.get("few_step_faces")
        if sub:
            o = sub["official"]
            miss = [k for k, bad in (("psnr_y", sub["psnr_y"] < o["psnr_y"] - 0.1),
                                     ("ssim_y", sub["ssim_y"] < o["ssim_y"] - 0.002),
                                     ("niqe", sub["niqe_x4"] > o["niqe_x4"] + 0.3),
                                     ("psnr_vs_official", rep["eta"] == 0 and sub["psnr_vs_official"] < 35)) if bad]
            out.append(f"| (the {sub['count']} faces it ran in few steps) | official / {r['setting']} | | "
                       f"{sub['psnr_vs_official']:.2f} | {o['psnr_y']:.2f} / {sub['psnr_y']:.2f} | "
                       f"{o['ssim_y']:.4f} / {sub['ssim_y']:.4f} | {o['niqe_x4']:.2f} / {sub['niqe_x4']:.2f} | "
                       + ("all met |" if not miss else "misses " + ", ".join(miss) + " |"))
    return out


PRIOR_NAMES = {"b235c085": "bundled (step 4,000; the generic schedule's source)", "99f5d1b1": "earlier (step 6,500)",
               "cb9d36ab": "first (step 1,200)",
               "3d3aeff3": "independent (seed 777, other faces, step 1,500)"}
CASES = (("restore", 0.0, "restoration t = 400, eta 0"), ("restore", 0.5, "restoration t = 400, eta 0.5"),
         ("inpaint", 1.0, "inpainting t = 480, eta 1"))


def transfer(paths: list[str]) -> list[str]:
    """Prior x case: official -> fast (PSNR-Y, SSIM-Y, NIQE), PSNR to the official result, faces, gates."""
    found: dict[tuple[str, str, float], tuple[dict, dict, dict]] = {}
    order: list[str] = []
    for p in paths:
        rep = json.loads(Path(p).read_text())
        fast = next((r for r in rep["results"] if r["setting"] == "fast"), None) or _measured_row(rep)
        if fast is None:
            continue
        sha = rep["prior_sha256"][:8]
        order += [sha] if sha not in order else []
        found[(sha, rep["task"], float(rep["eta"]))] = (rep, rep["results"][0], fast)
    out = ["| prior | case | `fast` runs | faces | PSNR to the official result (dB) | PSNR-Y official -> fast | "
           "SSIM-Y official -> fast | NIQE (x4) official -> fast | LPIPS official -> fast | gates |",
           "|---|---|---|---:|---:|---|---|---|---|---|"]
    for sha in order:
        for task, eta, label in CASES:
            if (sha, task, eta) not in found:
                out.append(f"| {PRIOR_NAMES.get(sha, sha)} | {label} | not measured | | | | | | | |")
                continue
            rep, off, r = found[(sha, task, eta)]
            (method, ts, _), = r["runs"].values() if "runs" in r else [(r["setting"], [], "")]
            gate = "all met" if r["meets_gates"] else "misses " + ", ".join(k for k, v in r["gates"].items() if not v)
            out.append(f"| {PRIOR_NAMES.get(sha, sha)} `{sha}` | {label} | {method} {'/'.join(map(str, ts))} | "
                       f"{rep['count']} | {r['psnr_vs_official']:.2f} | {off['psnr_y']:.2f} -> {r['psnr_y']:.2f} | "
                       f"{off['ssim_y']:.4f} -> {r['ssim_y']:.4f} | {off['niqe_x4']:.2f} -> {r['niqe_x4']:.2f} | "
                       f"{_lpips(off, r)} | {gate} |")
    return out


def _lpips(off: dict, r: dict) -> str:
    """'official -> fast' LPIPS (lower is closer to the truth), or 'not measured' for files without it."""
    return f"{off['lpips']:.4f} -> {r['lpips']:.4f}" if "lpips" in off and "lpips" in r else "not measured"


def _measured_row(rep: dict) -> dict | None:
    """A results file from before `fast` was a setting: its row of the setting difface.fastplan.MEASURED runs on the
    generic schedule for this case (what `fast` runs for a prior without a fit of its own)."""
    from difface.fastplan import MEASURED

    task = "inpainting" if rep["task"] == "inpaint" else "restoration"
    setting = MEASURED.get((task, "auto" if rep["start"] == "auto" else "fixed", float(rep["eta"])))
    if setting is None or setting.fractions is not None:
        return None
    return next((r for r in rep["results"] if r["setting"] == f"{setting.method}:{setting.nfe}:generic"), None)


def main() -> None:
    if sys.argv[1:2] == ["--transfer"]:
        print("\n".join(transfer(sys.argv[2:])))
        return
    print("| case | setting | NFE per face | PSNR vs official (dB) | PSNR-Y | SSIM-Y | NIQE (x4) | gates |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for p in sys.argv[1:]:
        for line in rows(json.loads(Path(p).read_text())):
            print(line)


if __name__ == "__main__":
    main()
