"""Run logs written by rank 0: `<name>.jsonl` (every key) and `<name>.csv` (the first row's columns).

On resume, rows after the resumed step are dropped first, so a run that died between its last
checkpoint and its last log line does not end up with duplicated steps. TensorBoard event files
are written too when the `tensorboard` package is installed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from difface.atomic import atomic_write_bytes

log = logging.getLogger(__name__)


class MetricsLogger:
    """Appends {"step": k, ...} rows; a disabled logger (other ranks) does nothing."""

    def __init__(self, run_dir: Path, name: str, *, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: object | None = None) -> None:
        self.enabled, self.tb = enabled, tensorboard
        self.jsonl, self.csv = Path(run_dir) / f"{name}.jsonl", Path(run_dir) / f"{name}.csv"
        self.columns: list[str] | None = None
        self.name = name
        if enabled:
            self._truncate(resume_step)

    def _truncate(self, resume_step: int | None) -> None:
        rows = []
        if resume_step is not None and self.jsonl.is_file():
            rows = [json.loads(s) for s in self.jsonl.read_text().splitlines() if s.strip()]
            rows = [r for r in rows if r.get("step", 0) <= resume_step]
        if resume_step is None and self.jsonl.is_file():
            log.warning("%s exists: starting a new log (use --resume to continue a run)", self.jsonl)
        atomic_write_bytes(self.jsonl, "".join(json.dumps(r) + "\n" for r in rows).encode())
        self.columns = list(rows[0]) if rows else None
        buf = io.StringIO()
        if rows:
            w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        atomic_write_bytes(self.csv, buf.getvalue().encode())

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        row = {k: (float(v) if not isinstance(v, (int, str)) else v) for k, v in row.items()}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        new = self.columns is None
        if new:
            self.columns = list(row)
        with open(self.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{self.name}/{k}", v, row["step"])


def tensorboard_writer(run_dir: Path, enabled: bool):
    """A SummaryWriter under run_dir/tensorboard when the package is installed (else None)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))
