import hashlib

import pytest
import torch

from difface import weights
from difface.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "weights"


@pytest.fixture
def local_entry(tmp_path, small_models, registered):
    """A registry entry served from a file:// URL, so the real download code path runs offline."""
    src = tmp_path / "served.pth"
    torch.save({"params_ema": small_models[1].state_dict()}, src)
    data = src.read_bytes()
    return registered(weights.WeightsEntry(
        "test-swinir", "estimator", src.as_uri(), "test_swinir.pth", "swinir_small",
        sha256=hashlib.sha256(data).hexdigest(), size=len(data)))


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFACE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "difface" / "weights"
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "h"))
    assert weights.cache_dir() == tmp_path / "h" / "weights"


def test_download_verifies_and_lands_atomically(cache, local_entry, small_models):
    path = weights.download("test-swinir", progress=False)
    assert path == cache / "test_swinir.pth"
    assert sorted(p.name for p in cache.iterdir()) == ["test_swinir.pth", "test_swinir.pth.sha256"]
    net = weights.load_network("test-swinir")
    assert torch.equal(net.conv_last.weight, small_models[1].conv_last.weight)


def test_corrupted_cache_file_is_detected_on_load(cache, local_entry):
    path = weights.download("test-swinir", progress=False)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="SHA-256"):
        weights.resolve("test-swinir")


def test_recorded_hash_catches_replaced_file(cache, tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    weights.verify(f)  # first use records the hash
    assert (tmp_path / "x.bin.sha256").read_text().startswith(hashlib.sha256(b"abc").hexdigest())
    f.write_bytes(b"abd")
    with pytest.raises(ValueError, match="does not match"):
        weights.verify(f)


def test_size_mismatch_discards_download(cache, local_entry, registered):
    registered(weights.WeightsEntry(**{**local_entry.__dict__, "size": local_entry.size + 1}))
    with pytest.raises(ValueError, match="bytes"):
        weights.download("test-swinir", progress=False)
    assert not any(cache.glob("*"))  # no partial file left behind


def test_offline_message_names_file_url_and_folder(cache, registered):
    registered(weights.WeightsEntry("test-offline", "prior", "http://127.0.0.1:9/nothing.pth", "nothing.pth"))
    with pytest.raises(weights.WeightsUnavailable) as e:
        weights.resolve("test-offline")
    msg = str(e.value)
    assert "http://127.0.0.1:9/nothing.pth" in msg and str(cache / "nothing.pth") in msg
    assert not any(cache.glob("*.part"))


def test_infer_arch_and_convert_command(tmp_path, small_models, capsys):
    torch.save({f"module.{k}": v for k, v in small_models[0].state_dict().items()}, tmp_path / "p.pth")
    assert weights.infer_arch(torch.load(tmp_path / "p.pth", weights_only=True)) == "unet_small"
    assert main(["weights", "convert", str(tmp_path / "p.pth"), str(tmp_path / "p.safetensors")]) == 0
    net = weights.load_network(tmp_path / "p.safetensors")
    assert torch.equal(net.out[2].weight, small_models[0].out[2].weight)
    assert main(["weights", "list"]) == 0
    assert "iddpm-ffhq512" in capsys.readouterr().out
