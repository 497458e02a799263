"""Fault injection: weights that change after they were verified, hostile checkpoints, faults half-way through a
run (a full disk, kill -9, two processes on one folder), broken videos. docs/reliability.md lists the promises
and the test of each. Slow ones (subprocesses, kills, video encoding) carry the `slow` marker (--runslow).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from difface import hub, weights
from difface.cli import main

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut_lq.png"
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """`difface ARGS` in this process: (exit status, stderr). An exception escaping would fail the test (a
    traceback is never the answer)."""
    code = main(args)
    return code, capsys.readouterr().err


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() \
        else []


# -- 3. weights that change after they were verified ----------------------------------------------------------
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "weights"


@pytest.fixture
def cached_estimator(cache, tmp_path, small_models, registered):
    """A registry entry ("fault-swinir", no SHA-256 in the registry: the hash is recorded on first use) whose
    file is downloaded into the cache (file:// URL: the real download code, offline) and loaded once."""
    src = tmp_path / "served.pth"
    torch.save({"params_ema": small_models[1].state_dict()}, src)
    registered(weights.WeightsEntry("fault-swinir", "estimator", src.as_uri(), "fault_swinir.pth", "swinir_small"))
    weights.download("fault-swinir", progress=False)
    weights.load_network("fault-swinir")
    return cache / "fault_swinir.pth"


def refused_at_load(path: Path, pattern: str) -> str:
    """load_network by name raises WeightsMismatch naming the file and the fix; the record is left as it was."""
    record = path.with_name(path.name + ".sha256")
    before = record.read_bytes()
    with pytest.raises(weights.WeightsMismatch) as e:
        weights.load_network("fault-swinir")
    text = str(e.value)
    assert text.startswith(str(path)) and re.search(pattern, text), text
    assert "Delete it" in text or "Delete the link" in text
    assert "difface weights download fault-swinir" in text or "download the file again" in text
    assert record.read_bytes() == before  # nothing written
    return text


def test_bit_flip_in_a_verified_cache_file_is_refused(cached_estimator):
    data = bytearray(cached_estimator.read_bytes())
    st = cached_estimator.stat()
    data[len(data) // 2] ^= 0x01
    cached_estimator.write_bytes(bytes(data))
    os.utime(cached_estimator, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only ctime says it
    print(refused_at_load(cached_estimator, "SHA-256 .* does not match"))


def test_truncated_cache_file_is_refused(cached_estimator):
    cached_estimator.write_bytes(cached_estimator.read_bytes()[:5000])
    refused_at_load(cached_estimator, "does not match")


def test_cache_file_replaced_by_another_valid_checkpoint_is_refused(cached_estimator, tmp_path):
    from difface.models import build

    other = build("swinir_small")  # random weights: a loadable checkpoint of the same network
    torch.save({"params_ema": other.state_dict()}, tmp_path / "other.pth")
    os.replace(tmp_path / "other.pth", cached_estimator)
    weights.load_network(tmp_path / "served.pth")  # the file itself is a fine checkpoint ...
    refused_at_load(cached_estimator, "does not match")  # ... but not the one verified


def test_symlink_in_the_cache_is_refused(cached_estimator, tmp_path):
    elsewhere = tmp_path / "elsewhere.pth"
    shutil.copy(cached_estimator, elsewhere)  # even an identical copy: the cache holds its own files
    cached_estimator.unlink()
    cached_estimator.symlink_to(elsewhere)
    refused_at_load(cached_estimator, f"is a symbolic link \\(to {re.escape(str(elsewhere))}\\)")


def test_unchanged_cache_file_is_not_hashed_again(cached_estimator, monkeypatch):
    """The record's size/mtime/ctime/inode match: no second hash (a 500 MB file costs ~0.8 s per load)."""
    calls = []
    real = hub.sha256_of
    monkeypatch.setattr(hub, "sha256_of", lambda p, *a: calls.append(p) or real(p, *a))
    weights.load_network("fault-swinir")
    assert calls == []
    os.utime(cached_estimator)  # a touch changes ctime: hashed again, same bytes, loads
    weights.load_network("fault-swinir")
    assert calls == [cached_estimator]


def test_bundled_asset_edited_in_place_is_refused(tmp_path, monkeypatch):
    """A copy of the package's assets with its SHA256SUMS: one byte of the bundled prior changed -> refused."""
    from difface.core import BUNDLED_DIR

    assets = tmp_path / "assets"
    (assets / "small64").mkdir(parents=True)
    prior = assets / "small64" / "prior.safetensors"
    shutil.copy(BUNDLED_DIR / "prior.safetensors", prior)
    monkeypatch.setattr(hub, "ASSETS", assets)
    monkeypatch.setattr(hub, "MANIFEST", assets / "SHA256SUMS")
    weights.write_bundled_manifest()
    weights.load_network(prior)  # as shipped: loads
    data = bytearray(prior.read_bytes())
    data[-100] ^= 0xFF  # a tensor byte, the file still parses
    prior.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsMismatch, match="shipped with difface was changed after installation") as e:
        weights.load_network(prior)
    assert str(prior) in str(e.value) and "pip install --force-reinstall difface" in str(e.value)


def test_the_package_manifest_matches_the_shipped_assets():
    """assets/SHA256SUMS covers every shipped weights file; after changing a bundled model run
    `python -c "from difface.weights import write_bundled_manifest; write_bundled_manifest()"`."""
    manifest = weights.bundled_manifest()
    shipped = {f.relative_to(hub.ASSETS).as_posix() for f in hub.ASSETS.rglob("*")
               if f.suffix in (".safetensors", ".npz", ".pth", ".onnx")}
    assert set(manifest) == shipped
    for rel, digest in manifest.items():
        assert hashlib.sha256((hub.ASSETS / rel).read_bytes()).hexdigest() == digest, rel


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Sends half of `payload`, then nothing (a connection that stalls: the download is killed meanwhile)."""

    payload = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[: len(self.payload) // 2])
        self.wfile.flush()
        time.sleep(30)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_download_killed_half_way_leaves_nothing_under_the_final_name(cache, tmp_path, small_models, registered):
    """kill -9 of `difface weights download` half-way: no file under the final name, the name still reads as
    missing (with the fix), the next download removes the stale part (untouched > 10 min) and succeeds."""
    src = tmp_path / "served.pth"
    torch.save({"params_ema": small_models[1].state_dict()}, src)
    _SlowHandler.payload = src.read_bytes()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/fault_swinir.pth"
    code = ("import sys; from difface import weights as W; W.register(W.WeightsEntry('fault-swinir', 'estimator', "
            f"{url!r}, 'fault_swinir.pth', 'swinir_small')); W.download('fault-swinir', progress=False)")
    env = dict(ENV, DIFFACE_HOME=str(cache.parent))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(p.stat().st_size for p in cache.glob(".fault_swinir.pth.*.part")):
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        srv.shutdown()
    parts = list(cache.glob(".fault_swinir.pth.*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(_SlowHandler.payload)
    assert not (cache / "fault_swinir.pth").exists()
    registered(weights.WeightsEntry("fault-swinir", "estimator", src.as_uri(), "fault_swinir.pth", "swinir_small"))
    with pytest.raises(weights.WeightsUnavailable, match="not available offline"):
        weights.load_network("fault-swinir", allow_download=False)
    old = time.time() - 3600
    os.utime(parts[0], (old, old))
    weights.download("fault-swinir", progress=False)
    assert sorted(p.name for p in cache.iterdir()) == ["fault_swinir.pth", "fault_swinir.pth.sha256"]
    weights.load_network("fault-swinir")


def test_partial_file_under_the_final_name_says_how_to_fix_it(cache, tmp_path, small_models, capsys, registered):
    """A cut copy put into the cache by hand (no hash recorded yet): refused at load, the message names the
    file and says delete and download again; through the command: status 2, no traceback, nothing written."""
    src = tmp_path / "served.pth"
    torch.save({"params_ema": small_models[1].state_dict()}, src)
    cache.mkdir(parents=True)
    (cache / "fault_swinir.pth").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    registered(weights.WeightsEntry("fault-swinir", "estimator", src.as_uri(), "fault_swinir.pth", "swinir_small"))
    with pytest.raises(weights.WeightsError) as e:
        weights.load_network("fault-swinir")
    text = str(e.value)
    assert text.startswith(str(cache / "fault_swinir.pth"))
    assert "damaged (an interrupted download" in text and "difface weights download fault-swinir" in text
    prior = _prior_file(tmp_path, small_models)
    code, err = run_cli(["restore", str(ASTRONAUT), "-o", str(tmp_path / "out"), "--aligned", "--device", "cpu",
                         "--prior", str(prior), "--estimator", "fault-swinir"], capsys)
    assert code == 2 and "damaged (an interrupted download" in err and "Traceback" not in err, err
    assert files_in(tmp_path / "out") == []


# -- hostile checkpoints ---------------------------------------------------------------------------------------
def _prior_file(tmp_path: Path, small_models) -> Path:
    from difface.weights import save_network

    p = tmp_path / "prior.safetensors"
    if not p.exists():
        save_network(small_models[0], p)
    return p


class _Payload:
    """Unpickling this would run code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _bad_estimators(tmp_path: Path, small_models) -> dict[str, tuple[Path, str]]:
    """name -> (checkpoint file, the message it must give)."""
    sd = small_models[1].state_dict()
    out = {}

    def save(name, obj, pattern):
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        out[name] = (path, pattern)

    key = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim == 4)
    save("extra-key", {**sd, "head.extra.weight": torch.zeros(3)}, r"unexpected keys \(1\): head.extra.weight")
    save("missing-key", {k: v for k, v in sd.items() if k != key}, rf"missing keys \(1\): {re.escape(key)}")
    save("wrong-shape", {**sd, key: torch.zeros(1, 2, 3, 4)}, rf"mis-shaped keys \(1\): {re.escape(key)}")
    save("wrong-dtype", {**sd, key: sd[key].to(torch.int32)}, rf"keys of another dtype \(1\): {re.escape(key)}: "
         "checkpoint torch.int32 vs model torch.float32")
    nan = sd[key].clone()
    nan.view(-1)[7] = float("nan")
    save("nan", {**sd, key: nan}, rf"keys with NaN or infinite values \(1\): {re.escape(key)}")
    save("code-payload", {"params_ema": sd, "extra": _Payload(tmp_path / "MARKER")},
         r"refused: it holds Python objects, not only tensors \(Unsupported global: GLOBAL (builtins\.)?exec\)"
         ".*never runs code")
    path = tmp_path / "not-tensors.pth"
    torch.save({"params_ema": {"a": [1, 2, 3]}}, path)
    out["not-tensors"] = (path, "not a mapping of parameter names to tensors")
    return out


def test_hostile_checkpoints_give_clear_errors_and_run_no_code(tmp_path, small_models, capsys):
    """Extra / missing keys, wrong shapes and dtypes, NaN weights, a pickle whose unpickling would create a file:
    `difface restore` exits 2 with a message naming the file and what is wrong; no traceback, no output, and the
    payload never runs."""
    prior = _prior_file(tmp_path, small_models)
    seen = []
    for name, (path, pattern) in _bad_estimators(tmp_path, small_models).items():
        out = tmp_path / f"out-{name}"
        code, err = run_cli(["restore", str(ASTRONAUT), "-o", str(out), "--aligned", "--device", "cpu",
                             "--prior", str(prior), "--estimator", str(path)], capsys)
        seen.append(f"{name}: exit {code}: {' | '.join(err.strip().splitlines())}")
        assert code == 2, (name, err)
        assert str(path) in err and re.search(pattern, err), (name, err)
        assert "Traceback" not in err and files_in(out) == []
    print("\n".join(seen))
    assert not (tmp_path / "MARKER").exists()
    with pytest.raises(weights.WeightsError, match="never runs code"):
        weights.read_state_dict(tmp_path / "code-payload.pth")
    assert not (tmp_path / "MARKER").exists()


def _zip_bomb(path: Path, gib: float = 1.0) -> Path:
    """A .pth that is a zip: a small data.pkl and one deflated entry of `gib` GiB of zeros (a few MB on disk)."""
    chunk = bytes(1 << 24)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        z.writestr("archive/version", "3\n")
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            for _ in range(int(gib * 64)):
                f.write(chunk)
    return path


def test_zip_bomb_posing_as_a_pth_is_refused_in_bounded_memory(tmp_path):
    bomb = _zip_bomb(tmp_path / "bomb.pth")
    assert bomb.stat().st_size < 10_000_000
    # VmHWM: this process's own peak (ru_maxrss would include the parent's memory at the fork)
    code = ("import sys; from difface import weights as W\n"
            "try:\n    W.read_state_dict(sys.argv[1])\nexcept W.WeightsError as e:\n    print('refused:', e)\n"
            "print('peak_mb', [int(x.split()[1]) // 1024 for x in open('/proc/self/status')\n"
            "                  if x.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert "refused:" in out.stdout and "compressed entr" in out.stdout and "nothing was decompressed" in out.stdout
    peak = int(re.search(r"peak_mb (\d+)", out.stdout).group(1))
    assert peak < 700, peak  # the bomb expands to 1024 MB; python + torch alone is ~400 MB here


# -- 2. faults half-way through a run -----------------------------------------------------------------------
def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def distinct_faces(folder: Path, n: int) -> list[Path]:
    """n different aligned faces (the astronaut, brightness changed a little for each)."""
    folder.mkdir(parents=True, exist_ok=True)
    a = cv2.imread(str(ASTRONAUT)).astype(np.float32)
    out = []
    for i in range(n):
        p = folder / f"face_{i:02d}.png"
        cv2.imwrite(str(p), np.clip(a * (0.9 + 0.02 * i), 0, 255).astype(np.uint8))
        out.append(p)
    return out


def restore_cmd(inputs, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "difface", "restore", *map(str, inputs), "-o", str(out), "--aligned",
            "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Eight faces and their outputs from one uninterrupted `difface restore --aligned` run."""
    root = tmp_path_factory.mktemp("reference")
    distinct_faces(root / "in", 8)
    out = root / "out"
    subprocess.run(restore_cmd([root / "in"], out), env=ENV, check=True, capture_output=True, timeout=600)
    return root / "in", {p.name: digest(p) for p in out.glob("*.png")}


def complete_outputs(out: Path, ref: dict[str, str]) -> list[str]:
    """Names of final files in `out`; each must be one complete result (the reference bytes)."""
    names = sorted(p.name for p in out.glob("*.png"))
    for n in names:
        assert digest(out / n) == ref[n], f"{n} is not a complete result"
    return names


@pytest.mark.slow
def test_disk_full_half_way(reference, tmp_path):
    """Output on a 400 KB tmpfs: the first files fit, the others fail with "no space left on device", each is
    reported, the batch goes on, exit 1, no partial file, the written ones are complete, inputs untouched."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder, ref = reference
    before = {p.name: digest(p) for p in folder.iterdir()}
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        out = subprocess.run(restore_cmd([folder], small), env=ENV, capture_output=True, text=True, timeout=600)
        print(out.stderr[-1500:])
        assert out.returncode == 1, out.stderr
        failed = re.findall(r"failed: (\S+): cannot write (\S+): No space left on device", out.stderr)
        written = complete_outputs(small, ref)
        assert failed and written and len(failed) + len(written) == 8
        assert sorted(os.listdir(small)) == written  # no partial or temporary file
        assert {Path(d).name for _, d in failed}.isdisjoint(written)
        assert re.search(rf"restored {len(written)} of 8 inputs .*; {len(failed)} failed", out.stderr)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert {p.name: digest(p) for p in folder.iterdir()} == before


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """kill -9 `proc` as soon as ready() is true (fails the test if it ended first)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, "the process ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_of_a_restore_batch_then_the_same_command(reference, tmp_path):
    """kill -9 after two outputs: every file under a final name is complete; the same command with
    --skip-existing keeps those files (not remade) and completes the batch with the bytes of an uninterrupted
    run; the same command without it redoes every input (outputs are replaced atomically)."""
    folder, ref = reference
    out = tmp_path / "out"
    proc = subprocess.Popen(restore_cmd([folder], out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: len(list(out.glob("*.png"))) >= 2)
    done = complete_outputs(out, ref)
    leftovers = sorted(p.name for p in out.iterdir() if p.suffix != ".png")
    print(f"killed with {len(done)} of 8 done; other files: {leftovers}")
    assert 2 <= len(done) < 8 and all(n.startswith(".") and n.endswith(".tmp") for n in leftovers)
    stamps = {n: (out / n).stat().st_mtime_ns for n in done}
    rerun = subprocess.run(restore_cmd([folder], out) + ["--skip-existing"], env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "restored 8 of 8 inputs" in rerun.stderr and f"{len(done)} kept" in rerun.stderr, rerun.stderr
    assert {n: (out / n).stat().st_mtime_ns for n in done} == stamps  # kept, not remade
    assert complete_outputs(out, ref) == sorted(ref)
    again = subprocess.run(restore_cmd([folder], out), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "--skip-existing" not in again.stderr, again.stderr
    assert complete_outputs(out, ref) == sorted(ref)


@pytest.mark.slow
def test_two_restore_processes_writing_one_folder(reference, tmp_path):
    """Two `difface restore` of the same inputs into one folder at once: every final file is one complete
    result, both exit 0, no temporary file is left."""
    folder, ref = reference
    out = tmp_path / "out"
    procs = [subprocess.Popen(restore_cmd([folder], out), env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    assert complete_outputs(out, ref) == sorted(ref)
    assert sorted(os.listdir(out)) == sorted(ref)


@pytest.mark.slow
def test_kill_9_of_training_then_resume_equals_an_uninterrupted_run(tmp_path):
    """`difface train prior` killed with SIGKILL after its second checkpoint; `--resume RUN` continues from the
    newest checkpoint and ends with the same weights, bit for bit, as a run never stopped."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _train_utils import tiny_config, write_images
    from difface.train.checkpoint import list_checkpoints, load_checkpoint
    from difface.train.config import dump_config

    folder = write_images(tmp_path / "imgs", 12)
    cfg = tiny_config("prior", folder, data={"flip": True}, optim={"micro_batch": 4}, max_steps=10,
                      checkpoint_every=1)
    (tmp_path / "prior.yaml").write_text(dump_config(cfg))
    train = [sys.executable, "-m", "difface", "train", "prior", "--device", "cpu"]
    subprocess.run(train + ["--config", str(tmp_path / "prior.yaml"), "--out", str(tmp_path / "straight")],
                   env=ENV, check=True, capture_output=True, timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen(train + ["--config", str(tmp_path / "prior.yaml"), "--out", str(run)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: len(list((run / "checkpoints").glob("step_*.pt"))) >= 2)
    kept = list_checkpoints(run)
    print(f"killed after {[p.name for p in kept]}")
    assert kept and kept[-1].name != "step_00000010.pt"
    for ck in kept:  # every checkpoint under a final name loads
        load_checkpoint(ck)
    again = subprocess.run(train + ["--resume", str(run)], env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_00000010.pt")
    b = load_checkpoint(run / "checkpoints" / "step_00000010.pt")
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


# -- the video resume key ------------------------------------------------------------------------------------
def test_video_resume_key_holds_every_option_that_changes_pixels():
    from difface.pipeline import PhotoOptions, RestoreOptions, SamplingOptions
    from difface.pipeline.options import VideoSettings
    from difface.pipeline.video import video_resume_key

    def key(o):
        return video_resume_key(o, "m", 20, 0.5, "cpu")

    base = RestoreOptions()
    changed = [RestoreOptions(photo=PhotoOptions(detector="retinaface_mobile0.25")),
               RestoreOptions(photo=PhotoOptions(upscale=3)),
               RestoreOptions(photo=PhotoOptions(bg_upsampler="lanczos")),
               RestoreOptions(photo=PhotoOptions(only_center_face=True)),
               RestoreOptions(photo=PhotoOptions(max_face_size=100.0)),
               RestoreOptions(sampling=SamplingOptions(seed=1)),
               RestoreOptions(sampling=SamplingOptions(sampler="ddim", nfe=4)),
               RestoreOptions(video=VideoSettings(crf=30)), RestoreOptions(video=VideoSettings(smoothing=False)),
               RestoreOptions(batch_size=2)]
    keys = {key(o) for o in changed}
    assert len(keys) == len(changed) and key(base) not in keys
    same = [RestoreOptions(video=VideoSettings(resume=False)), RestoreOptions(max_pixels=1000),
            RestoreOptions(save_comparison=True), RestoreOptions(video=VideoSettings(refuse_vfr=True))]
    assert {key(o) for o in same} == {key(base)}
    assert video_resume_key(base, "other-model", 20, 0.5, "cpu") != key(base)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    av = pytest.importorskip("av", reason="PyAV is the optional 'video' extra")
    from skimage import data

    from difface.video.synth import ClipSpec, group_photo_from, make_clip

    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    # 2 frames/s for 16 s: the first 10 s segment (20 frames) is finished well before the end (32 frames)
    make_clip(group_photo_from(data.astronaut(), 2, 200), path, ClipSpec(size=(192, 108), fps=2, seconds=16.0, seed=3))
    assert av
    return path


@pytest.mark.slow
def test_kill_9_of_a_video_job_resumes_and_another_detector_starts_afresh(face_clip, tmp_path):
    """`difface restore clip.mp4` killed with SIGKILL once a segment is finished: no file under the final name;
    the same command resumes from the finished segments and gives the bytes of an uninterrupted run; killed again
    and rerun with another --detector, the clip is restored afresh (the resume key holds the detector)."""
    from difface.face.retinaface import RetinaFace

    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    net = RetinaFace("mobile0.25")  # zero weights: a detector that finds no face, enough to differ
    torch.save({k: torch.zeros_like(v) for k, v in net.state_dict().items()},
               home / "weights" / "detection_mobilenet0.25_Final.pth")
    env = dict(ENV, DIFFACE_HOME=str(home))

    def cmd(out, *extra):
        return [sys.executable, "-m", "difface", "restore", str(face_clip), "-o", str(out), "--device", "cpu",
                "--batch-frames", "4", "--upscale", "1", "--bg-upsampler", "lanczos", *extra]

    straight = subprocess.run(cmd(tmp_path / "straight"), env=env, capture_output=True, text=True, timeout=900)
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "out"
    manifest = out / ".pan.mp4.parts" / "manifest.json"

    def segments_done():
        try:
            return len(__import__("json").loads(manifest.read_text())["segments"]) >= 1
        except (OSError, ValueError, KeyError):
            return False

    proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, segments_done, timeout=600)
    assert not (out / "pan.mp4").exists()
    again = subprocess.run(cmd(out), env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "resumed from an interrupted run" in again.stderr, again.stderr
    assert (out / "pan.mp4").read_bytes() == (tmp_path / "straight" / "pan.mp4").read_bytes()
    other = tmp_path / "other"
    proc = subprocess.Popen(cmd(other), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = other / ".pan.mp4.parts" / "manifest.json"
    _kill_when(proc, segments_done, timeout=600)
    fresh = subprocess.run(cmd(other, "--detector", "retinaface_mobile0.25"), env=env, capture_output=True,
                           text=True, timeout=900)
    assert fresh.returncode == 0, fresh.stderr
    assert "resumed" not in fresh.stderr and "0 faces" in fresh.stderr, fresh.stderr


# -- 4. videos broken the ways real files are ----------------------------------------------------------------
def _copy_streams(src: Path, dst: Path, fmt: str, video_twice: bool = False) -> Path:
    """Remux `src` into `dst` (format `fmt`); with video_twice the video stream is there twice."""
    import av

    with av.open(str(src)) as c, av.open(str(dst), "w", format=fmt) as out:
        ins = [c.streams.video[0]] + list(c.streams.audio)
        outs = {s.index: [out.add_stream_from_template(s)] for s in ins}
        if video_twice:
            outs[c.streams.video[0].index].append(out.add_stream_from_template(c.streams.video[0]))
        for p in c.demux(*ins):
            if p.size:
                targets = outs[p.stream.index]
                for t in targets:
                    q = p if t is targets[-1] else av.Packet(bytes(p))
                    if q is not p:
                        q.pts, q.dts, q.duration, q.time_base = p.pts, p.dts, p.duration, p.time_base
                        q.is_keyframe = p.is_keyframe
                    q.stream = t
                    out.mux(q)
    return dst


def _write_frames(path: Path, pts_ms: list[int], size=(96, 64), fmt="mp4", codec="libx264") -> Path:
    import av

    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec != "mjpeg":
            s.time_base = s.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
        if not pts_ms:
            out.start_encoding()
            return path
        for i, p in enumerate(pts_ms):
            f = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 40 + 20 * i, np.uint8), format="rgb24")
            f.pts = p
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def _claims_16k(tiny_avi: Path, dst: Path) -> Path:
    """An MJPEG AVI of one 64x48 frame whose headers (AVI and JPEG) claim 16000 x 16000 pixels."""
    import struct

    data = bytearray(tiny_avi.read_bytes())
    for old, new in [(struct.pack("<II", 64, 48), struct.pack("<II", 16000, 16000)),  # avih, BITMAPINFOHEADER
                     (struct.pack(">HH", 48, 64), struct.pack(">HH", 16000, 16000))]:  # JPEG SOF: height, width
        i = data.find(old)
        while i >= 0:
            data[i:i + len(old)] = new
            i = data.find(old, i + len(new))
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def broken_videos(tmp_path_factory):
    """A folder of clips broken the ways real files are, beside one good clip with faces and audio."""
    av = pytest.importorskip("av", reason="PyAV is the optional 'video' extra")
    from difface.video.synth import ClipSpec, make_clip

    d = tmp_path_factory.mktemp("broken")
    face = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    make_clip(face, d / "good.mp4", ClipSpec(size=(192, 192), fps=10, seconds=0.6, degradation=None), sidecar=False)
    data = (d / "good.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    _write_frames(d / "zero_frames.avi", [], fmt="avi", codec="mpeg4")
    with av.open(str(d / "audio_only.mp4"), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=8000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 8000, 0
        out.mux(s.encode(f))
        out.mux(s.encode(None))
    _write_frames(d / "vfr.mp4", [0, 40, 80, 200, 240, 400, 440, 480])
    make_clip(face, d / "rotated.mp4", ClipSpec(size=(96, 64), fps=10, seconds=0.5, degradation=None, audio=False,
              rotation=90), sidecar=False)
    _write_frames(tmp_path_factory.mktemp("tiny") / "tiny.avi", [0], size=(64, 48), fmt="avi", codec="mjpeg")
    _claims_16k(next(iter(d.parent.glob("tiny*/tiny.avi"))), d / "claims_16k.avi")
    _copy_streams(d / "good.mp4", d / "two_video_streams.mkv", "matroska", video_twice=True)
    cv2.imwrite(str(d / "wall.png"), np.full((64, 96, 3), 128, np.uint8))
    make_clip(np.full((120, 160, 3), 128, np.uint8), d / "no_faces.mp4", ClipSpec(size=(96, 64), fps=10, seconds=0.5,
              degradation=None, audio=False), sidecar=False)
    (d / "wall.png").unlink()
    _write_frames(d / "ten_minutes.mp4", [0, 600_000])  # two frames, the second after ten minutes
    shutil.copy(ASTRONAUT, d / "photo_renamed.mp4")
    return d


def _restore_folder(folder: Path, out: Path, *extra: str, files=None) -> tuple[int, str, int]:
    """`difface restore` of the folder (or files) in a subprocess: (exit status, stderr, peak RSS in MB)."""
    from difface.models import build, fill_deterministic
    from difface.weights import save_network

    models = out.parent / "models"
    if not models.exists():
        models.mkdir()
        save_network(fill_deterministic(build("unet_small")), models / "prior.safetensors")
        save_network(fill_deterministic(build("swinir_small")), models / "est.safetensors")
    args = [sys.executable, "-m", "difface", "restore", *(map(str, files) if files else [str(folder)]), "-o",
            str(out), "--device", "cpu", "--prior", str(models / "prior.safetensors"), "--estimator",
            str(models / "est.safetensors"), "--start-step", "2", "--bg-upsampler", "lanczos", "--upscale", "1",
            *extra]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0.0]

    def watch():  # the process's own peak (VmHWM), read until it exits
        while proc.poll() is None:
            try:
                peaks.append(_rss_mb(proc.pid, "VmHWM"))
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out_s, err = proc.communicate(timeout=900)
    watcher.join(timeout=5)
    return proc.returncode, out_s + err, int(max(peaks))


@pytest.mark.slow
def test_broken_videos_get_one_clear_outcome_each(broken_videos, tmp_path):
    """One batch of every broken clip beside a good one: each gets its own line (restored, or failed with the
    reason), the batch goes on, exit 1, no traceback, memory bounded (the 16000 x 16000 header is refused before
    decoding), no file under a final name for a failed one, and the good clip's audio is bit-identical."""
    import av

    from difface.video import probe_video

    out = tmp_path / "out"
    code, text, peak = _restore_folder(broken_videos, out)
    print(text[-4000:], f"\npeak RSS of the batch: {peak} MB")
    assert code == 1 and "Traceback" not in text
    failed = dict(re.findall(r"failed: \S*/(\S+?): (.+)", text))
    expect_failed = {
        "truncated.mp4": r"truncated|corrupt", "zero_frames.avi": r"the video stream has no frames",
        "audio_only.mp4": r"no video stream \(streams: audio\)",
        "claims_16k.avi": r"16000x16000 = 256\.0 megapixels, over the limit of 50 MP .*nothing was decoded",
        "ten_minutes.mp4": r"lasts 600 s \(from its header\), over the limit of 300 s; raise it with "
                           r"--max-video-seconds", "photo_renamed.mp4": r"still image"}
    for name, pattern in expect_failed.items():
        assert name in failed and re.search(pattern, failed[name]), (name, failed.get(name))
        assert not (out / Path(name).with_suffix(".mp4").name).exists() or name == "photo_renamed.mp4"
    for name in ("good.mp4", "vfr.mp4", "rotated.mp4", "two_video_streams.mp4", "no_faces.mp4"):
        assert (out / name).is_file(), name
        probe_video(out / name)
    assert re.search(r"two_video_streams.mkv: 2 video streams; the first \(stream #0\) is restored", text)
    assert re.search(r"no_faces.mp4: 5 frames, 0 faces", text)
    assert probe_video(out / "rotated.mp4").rotation == 0 and probe_video(out / "rotated.mp4").width == 96
    assert peak < 1500, peak

    def audio(path):
        with av.open(str(path)) as c:
            return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]

    assert audio(out / "good.mp4") == audio(broken_videos / "good.mp4")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no work folder or temporary file left
    # the ten-minute header passes when asked for (--max-video-seconds 0: no limit)
    code, text, _ = _restore_folder(broken_videos, tmp_path / "long", "--max-video-seconds", "0",
                                    files=[broken_videos / "ten_minutes.mp4"])
    assert code == 0, text
    assert probe_video(tmp_path / "long" / "ten_minutes.mp4", max_seconds=0).duration == pytest.approx(600.04, abs=0.05)


# -- 1. the app under load (real HTTP, the official gradio_client) --------------------------------------------
def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


_DISCONNECT = """
import sys, time
from gradio_client import Client, handle_file
job = Client(sys.argv[1], verbose=False).submit(handle_file(sys.argv[2]), mode="whole photo", seed=99,
                                                api_name="/restore")
t0 = time.time()
while time.time() - t0 < 120 and job.status().code.name not in ("PROCESSING", "PROGRESS"):
    time.sleep(0.05)
print("started", job.status().code.name, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_the_app_under_load(tmp_path, capsys):
    """`difface app` on 127.0.0.1 with 8 gradio_client clients at once restoring a photo, 2 uploading a file over
    the size limit and 2 killed (kill -9) while their job runs: every accepted job gives the bytes of the command
    its log line names, the refused ones get a message, the server's peak RSS stays bounded, it serves a request
    afterwards, and when it stops no temporary file or folder of it is left."""
    pytest.importorskip("gradio_client")
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("difface-app-*"))
    env = dict(ENV)
    env.pop("GRADIO_TEMP_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "difface", "app", "--port", "0", "--device", "cpu",
                               "--max-upload-mb", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    lines, url = [], None
    for line in server.stdout:
        lines.append(line)
        m = re.search(r"difface app: (http://127\.0\.0\.1:\d+/)", line)
        if m:
            url = m.group(1)
            break
    assert url, "".join(lines)
    drain = threading.Thread(target=lambda: [lines.append(x) for x in server.stdout], daemon=True)
    drain.start()
    big = tmp_path / "big.png"  # 1400 x 1400 of noise: about 5.9 MB, over the 1 MB limit
    cv2.imwrite(str(big), np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8))
    assert big.stat().st_size > 2_000_000
    rss, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            rss.append(_rss_mb(server.pid))
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    idle_rss = _rss_mb(server.pid)

    def good(i):
        t0 = time.perf_counter()
        result, log_line = Client(url, verbose=False).predict(handle_file(ASTRONAUT), mode="whole photo", seed=i,
                                                              api_name="/restore")
        return i, Path(result).read_bytes(), log_line, time.perf_counter() - t0

    def oversize(i):
        try:
            Client(url, verbose=False).predict(handle_file(big), mode="whole photo", api_name="/restore")
        except Exception as e:  # noqa: BLE001 - the client's error for a refused upload
            return i, f"{type(e).__name__}: {e}"
        return i, None

    t0 = time.perf_counter()
    killers = [subprocess.Popen([sys.executable, "-c", _DISCONNECT, url, str(ASTRONAUT)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    with ThreadPoolExecutor(10) as pool:
        goods = [pool.submit(good, i) for i in range(8)]
        bads = [pool.submit(oversize, i) for i in range(2)]
        for k in killers:  # killed as soon as its job runs: the connection drops mid-job
            assert k.stdout.readline().startswith("started")
            k.send_signal(signal.SIGKILL)
            k.wait(timeout=30)
        goods = [f.result(timeout=900) for f in goods]
        bads = [f.result(timeout=900) for f in bads]
    wall = time.perf_counter() - t0
    for _, msg in bads:
        assert msg is not None and re.search(r"(?i)file.*(size|large|exceed)|413", msg), msg
    # gradio_client refuses from the app's config; a raw upload over the limit is refused by the server itself
    own = [d for d in set(tmp.glob("difface-app-files-*")) - before]
    body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + big.read_bytes() + b"\r\n--b--\r\n")
    raw_refusal = _raw_post(url, "/gradio_api/upload", body, "multipart/form-data; boundary=b")
    assert raw_refusal.startswith("HTTP/1.1 413") or raw_refusal == "connection closed by the server", raw_refusal
    assert own and not [p for d in own for p in d.rglob("big.png")]
    after_load = Client(url, verbose=False).predict(handle_file(ASTRONAUT), mode="aligned face",
                                                    api_name="/restore")  # the server keeps serving
    stop.set()
    peak = _rss_mb(server.pid, "VmHWM")
    differ = []
    for i, data, log_line, _ in goods:  # the command in a process like the server's (one thread: same sums)
        out = tmp_path / f"cli-{i}"
        subprocess.run([sys.executable, "-m", "difface", *shlex_split_log(log_line, out)], env=env, check=True,
                       capture_output=True, timeout=300)
        if data != (out / "astronaut_lq.png").read_bytes():
            differ.append(i)
    assert not differ, f"clients whose result is not the command's bytes: {differ}"
    assert "aligned face restored" in after_load[1]
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0, "".join(lines)
    drain.join(timeout=10)
    left = set(tmp.glob("difface-app-*")) - before
    seconds = sorted(s for *_, s in goods)
    with capsys.disabled():
        print(f"\nload: 8 accepted jobs in {wall:.1f} s (per job {seconds[0]:.1f}-{seconds[-1]:.1f} s from submit to "
              f"result), 2 refused ({bads[0][1][:120]}; raw upload: {raw_refusal}), 2 clients killed mid-job; "
              f"server RSS idle {idle_rss:.0f} MB, peak {peak:.0f} MB; left behind: {sorted(map(str, left))}")
    assert peak < idle_rss + 1024, (idle_rss, peak)
    assert not left
    assert "Traceback" not in "".join(lines), "".join(lines)


def _raw_post(url: str, path: str, body: bytes, ctype: str) -> str:
    """POST over a plain socket, sending the body in 64 KB pieces; the response's status line, or "connection
    closed by the server" when it stops reading (and answers nothing readable) before the body is sent."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        try:
            for i in range(0, len(body), 1 << 16):
                sock.sendall(body[i:i + (1 << 16)])
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            head = sock.recv(4096)
        except (ConnectionResetError, OSError):
            head = b""
    return head.split(b"\r\n", 1)[0].decode() if head else "connection closed by the server"


def shlex_split_log(log_line: str, out: Path) -> list[str]:
    """The `difface restore` command of an app log line, on the real input, writing to `out`."""
    import shlex

    args = shlex.split(log_line.split("Same as: ", 1)[1])[1:]
    args[1] = str(ASTRONAUT)
    args[args.index("-o") + 1] = str(out)
    return args
