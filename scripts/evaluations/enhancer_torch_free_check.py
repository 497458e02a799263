"""Load an enhancer file (`difface export enhancer`) in a process where torch and difface cannot be imported, run it
on one aligned 512 crop, and print what it takes and returns (names, shapes, range, metadata keys, seconds).

  python scripts/evaluations/enhancer_torch_free_check.py difface512-enhancer.onnx crop512.png [--threads 2]
"""

import sys


class NoTorch:
    """An import hook that refuses torch and difface: the file must run on onnxruntime and numpy alone."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "difface"):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, NoTorch())

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("crop", help="an aligned 512x512 RGB face")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    s = ort.InferenceSession(args.file, so, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t0
    crop = np.asarray(Image.open(args.crop).convert("RGB"), np.float32) / 255
    x = (crop.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32)  # [1, 3, 512, 512] in [-1, 1]
    t0 = time.perf_counter()
    y = s.run(None, {"input": x})[0]
    run = time.perf_counter() - t0
    print(json.dumps({"torch_imported": "torch" in sys.modules,
                      "inputs": [(i.name, i.type, i.shape) for i in s.get_inputs()],
                      "outputs": [(o.name, o.type, o.shape) for o in s.get_outputs()],
                      "out_shape": list(y.shape), "out_min": float(y.min()), "out_max": float(y.max()),
                      "finite": bool(np.isfinite(y).all()), "session_load_s": load, "run_s": run,
                      "metadata_keys": sorted(s.get_modelmeta().custom_metadata_map)}, indent=1))


if __name__ == "__main__":
    main()
