"""The resume state of a video job: tracker state (exact floats), the work folder's lock and its manifest."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from difface.video.track import FaceTracker, Track

log = logging.getLogger("difface.video.process")

MANIFEST_VERSION = 1


class _State:
    """Tracker + landmark history, serialisable (exact floats) for the resume manifest."""

    def __init__(self, opts) -> None:  # opts: difface.config.VideoSettings
        self.tracker = FaceTracker(opts.seed, max_missing=opts.max_missing)
        self.history: dict[int, dict[int, np.ndarray]] = {}  # track id -> frame -> raw landmarks

    def to_json(self, frames_from: int, frames_to: int) -> dict:
        t = self.tracker
        return {
            "next_id": t.next_id,
            "tracks": [{"id": k.id, "seed": k.seed, "box": k.box.tolist(), "landmarks": k.landmarks.tolist(),
                        "first": k.first_frame, "last": k.last_frame, "velocity": k.velocity.tolist(),
                        "hits": k.hits} for k in t.tracks],
            "history": {str(tid): {str(f): lm.tolist() for f, lm in h.items() if frames_from <= f < frames_to}
                        for tid, h in self.history.items()},
        }

    def load(self, d: dict) -> None:
        self.tracker.next_id = d["next_id"]
        self.tracker.tracks = [Track(k["id"], k["seed"], np.array(k["box"]), np.array(k["landmarks"]), k["first"],
                                     k["last"], np.array(k["velocity"]), k["hits"]) for k in d["tracks"]]
        self.history = {int(tid): {int(f): np.array(lm) for f, lm in h.items()} for tid, h in d["history"].items()}
        self.history = {k: v for k, v in self.history.items() if v}


def _source_id(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Lock:
    """An exclusive lock on the work folder (POSIX), so two runs never write the same output."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            raise RuntimeError(f"{self.path.parent}: another run is writing this output") from e
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _load_manifest(work: Path, src: Path, config: dict) -> dict | None:
    path = work / "manifest.json"
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (m.get("version") == MANIFEST_VERSION and m.get("source") == _source_id(src)
            and m.get("config") == json.loads(json.dumps(config)))
    if not same:
        log.info("%s: an unfinished run with another source or options was found; starting over", work)
        return None
    if not all((work / s["file"]).is_file() for s in m.get("segments", [])):
        log.info("%s: segments of the unfinished run are missing; starting over", work)
        return None
    return m
