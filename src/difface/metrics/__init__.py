"""Evaluation metrics for face restoration (those of the DifFace paper) and the registry of their names.

Full-reference (need ground truth): psnr, ssim, psnr_y, ssim_y, lpips, lpips_vgg, ids, deg,
ids_dlib, lmd. No-reference: niqe. Set-level: fid (restored set against reference statistics).
`difface.metrics.runner.evaluate` computes any of them over paired folders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """A metric name: its kind ("paired", "noref" or "set"), direction and a one-line description."""

    name: str
    kind: str
    higher_is_better: bool
    description: str


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("psnr", "paired", True, "PSNR on RGB, dB (uint8 grid, peak 255)"),
    MetricInfo("ssim", "paired", True, "SSIM on RGB, mean over channels (11x11 Gaussian, sigma 1.5)"),
    MetricInfo("psnr_y", "paired", True, "PSNR on the BT.601 Y channel [16, 235], dB"),
    MetricInfo("ssim_y", "paired", True, "SSIM on the BT.601 Y channel"),
    MetricInfo("lpips", "paired", False, "LPIPS v0.1, AlexNet backbone (needs alexnet-owt-7be5be79.pth)"),
    MetricInfo("lpips_vgg", "paired", False, "LPIPS v0.1, VGG-16 backbone (needs vgg16-397923af.pth)"),
    MetricInfo("ids", "paired", True, "ArcFace cosine similarity (needs a user ONNX model, --arcface)"),
    MetricInfo("deg", "paired", False, "ArcFace embedding angle in degrees (needs --arcface)"),
    MetricInfo("ids_dlib", "paired", True, "dlib ResNet descriptor cosine similarity (offline; extra [metrics])"),
    MetricInfo("lmd", "paired", False, "5-point landmark distance, pixels of the ground truth"),
    MetricInfo("niqe", "noref", False, "NIQE on the Y channel (MATLAB-compatible)"),
    MetricInfo("fid", "set", False, "FID, pytorch-fid Inception (needs pt_inception-2015-12-05-6726825d.pth)"),
)}


def parse_metric_names(spec: str) -> list[str]:
    """'psnr, ssim_y,lpips' -> ['psnr', 'ssim_y', 'lpips']; raises ValueError naming unknown names."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    if not names:
        raise ValueError("no metric named")
    return list(dict.fromkeys(names))


__all__ = ["METRICS", "MetricInfo", "parse_metric_names"]
