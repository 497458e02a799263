"""Markdown table of scripts/evaluations/eval_fast_any.py results (docs/speed.md, "Few steps at any start and eta").

usage: python scripts/evaluations/fast_any_table.py docs/results/fast_any_*.json
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


def main() -> None:
    print("| case | setting | NFE per face | PSNR vs official (dB) | PSNR-Y | SSIM-Y | NIQE (x4) | gates |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for p in sys.argv[1:]:
        for line in rows(json.loads(Path(p).read_text())):
            print(line)


if __name__ == "__main__":
    main()
