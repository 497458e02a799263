"""CLI subcommands. Each module exposes `register(subparsers)` that adds one sub-parser whose
`func(args) -> int` default runs the command and returns the exit status.

`COMMANDS` (name -> one-line help) is the one list of them: difface.cli lists them from it without importing
any (so `difface --help` starts no torch) and imports only the module of the command that runs.
"""

COMMANDS: dict[str, str] = {
    "restore": "restore faces (aligned crops or whole photos)",
    "inpaint": "fill the missing region of aligned faces",
    "weights": "list, download, locate and convert weights",
    "degrade": "synthesize degraded (lq, hq) pairs from HQ faces",
    "detect": "detect faces and their 5 landmarks; write JSON",
    "data": "prepare data sets (align faces)",
    "evaluate": "score restored images (PSNR, SSIM, LPIPS, FID, IDS, LMD, NIQE)",
    "train": "train the face prior (UNet), the diffused estimator (SwinIR) or the inpainting estimator (LaMa)",
    "tune": "fit the few-step schedule to the official loop for your own weights (stored for the prior)",
    "benchmark": "measure what a restore command costs per face, or the networks' speed and memory",
    "app": "local web app: restore and inpaint faces in a browser",
    "export": "export the networks (ONNX) with a manifest, or one ONNX face-enhancer file for other programs",
}
