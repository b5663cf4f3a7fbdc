"""Upsampler checkpoints are read with weights only (docs/methods/simfeatup.md#reading-checkpoints-safely), and the
official one is downloaded through torch.hub with its SHA-256 ends checked (#the-released-weights). No real
download: a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

import frugalvl.models.upsampler as up_mod
from frugalvl.errors import UserError
from frugalvl.models.jbu import JBUOne, JBUStack
from frugalvl.models.upsampler import CHECKPOINT_GLOBALS, fetch_official, load_upsampler, save_upsampler
from frugalvl.testing.clip import write_tiny_torchscript_clip
from tests.conftest import SHARED_WEIGHTS, shared_file


class OpensAFile:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for code a hostile file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class HyperParameters(dict):
    """An unknown class, as Lightning's ``AttributeDict`` of hyper-parameters would be."""


def _lightning_style(tmp_path: Path, extra: object, legacy: bool = False) -> Path:
    up = JBUOne(feat_dim=8, radius=1)
    ckpt = {
        "epoch": 1,
        "global_step": 10,
        "pytorch-lightning_version": "1.9.4",
        "state_dict": {f"upsampler.{k}": v for k, v in up.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}}},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hyper_parameters": extra,
    }
    path = tmp_path / "lightning.ckpt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


def _refused(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_upsampler(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# -- weights-only loading -------------------------------------------------------------------------


@pytest.mark.shared_data
def test_the_real_featup_checkpoint_needs_no_allow_listed_class():
    path = shared_file("featup_clip_jbu_stack_cocostuff.ckpt", SHARED_WEIGHTS)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    assert CHECKPOINT_GLOBALS == ()  # nothing is allowed beyond torch's weights-only set
    up = load_upsampler(path)  # its callback tensors were saved on cuda:0: mapped to the CPU
    assert isinstance(up, JBUStack) and len(up.state_dict()) == 42


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, legacy):
    marker = tmp_path / "ran.txt"
    message = _refused(_lightning_style(tmp_path, OpensAFile(marker), legacy))
    assert "is refused" in message and "open" in message
    assert not marker.exists()
    # the same file without the hostile object loads
    assert isinstance(load_upsampler(_lightning_style(tmp_path, {"lr": 1e-3})), JBUOne)


def test_a_checkpoint_with_an_unknown_class_is_refused(tmp_path):
    message = _refused(_lightning_style(tmp_path, HyperParameters(lr=1e-3)))
    assert "HyperParameters" in message and "is refused" in message


@pytest.mark.filterwarnings("ignore")  # tracing the tiny TorchScript CLIP warns
def test_other_models_checkpoints_get_one_line(tmp_path, tiny_clip_file):
    assert "not a JBU upsampler checkpoint" in _refused(tiny_clip_file)  # a CLIP state dict
    assert "TorchScript archive" in _refused(write_tiny_torchscript_clip(tmp_path / "ViT-tiny.pt"))
    torch.save([torch.zeros(2)], tmp_path / "list.ckpt")
    assert "holds no state dict" in _refused(tmp_path / "list.ckpt")


def test_saved_extra_data_round_trips_with_weights_only(tmp_path):
    up = JBUOne(feat_dim=8, radius=1)
    save_upsampler(tmp_path / "u.ckpt", up, global_step=3, frugalvl={"settings": {"radius": 1, "steps": None}})
    raw = torch.load(tmp_path / "u.ckpt", weights_only=True)
    assert raw["global_step"] == 3 and raw["frugalvl"]["settings"] == {"radius": 1, "steps": None}
    assert list(tmp_path.iterdir()) == [tmp_path / "u.ckpt"]  # no temporary file left


# -- the official download --------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_server(tmp_path, monkeypatch):
    """Serve ``tmp_path/served`` on 127.0.0.1; the cache goes to ``tmp_path/cache``."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    payload = b"not really a checkpoint, but bytes with a known digest\n" * 100
    (served / "weights.ckpt").write_bytes(payload)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    digest = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(up_mod, "OFFICIAL_URL", f"http://127.0.0.1:{server.server_address[1]}/weights.ckpt")
    monkeypatch.setattr(up_mod, "OFFICIAL_SHA256_HEAD", digest[:8])
    monkeypatch.setattr(up_mod, "OFFICIAL_SHA256_TAIL", digest[-4:])
    monkeypatch.setenv("FRUGALVL_CACHE", str(tmp_path / "cache"))
    yield payload, digest, tmp_path / "cache"
    server.shutdown()
    server.server_close()


def test_download_verifies_and_renames_into_the_cache(local_server, monkeypatch):
    payload, _, cache = local_server
    path = fetch_official()
    assert path == cache / up_mod.OFFICIAL_NAME and path.read_bytes() == payload
    assert list(cache.iterdir()) == [path]  # no partial or temporary file left
    monkeypatch.setattr(up_mod, "OFFICIAL_URL", "http://127.0.0.1:9/unused")
    assert fetch_official() == path  # the cached file is used, and checked again
    path.write_bytes(payload + b"tampered")
    with pytest.raises(UserError, match="does not have the official checkpoint's SHA-256"):
        fetch_official()


@pytest.mark.parametrize("wrong", ["head", "tail"])
def test_a_download_with_the_wrong_digest_leaves_nothing(local_server, monkeypatch, wrong):
    _, digest, cache = local_server
    if wrong == "head":  # torch.hub's own check, while streaming
        monkeypatch.setattr(up_mod, "OFFICIAL_SHA256_HEAD", "0" * 8 if not digest.startswith("0") else "1" * 8)
    else:  # frugalvl's check of the published tail
        monkeypatch.setattr(up_mod, "OFFICIAL_SHA256_TAIL", "0" * 4 if not digest.endswith("0") else "1" * 4)
    with pytest.raises(UserError, match="SHA-256") as info:
        fetch_official()
    assert "\n" not in str(info.value)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_no_network_is_one_line(local_server, monkeypatch):
    _, _, cache = local_server
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(up_mod, "OFFICIAL_URL", f"http://127.0.0.1:{port}/weights.ckpt")
    with pytest.raises(UserError, match="no network") as info:
        fetch_official()
    assert "\n" not in str(info.value)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_silent_server_times_out_with_one_line(local_server, monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        monkeypatch.setattr(up_mod, "OFFICIAL_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/weights.ckpt")
        with pytest.raises(UserError, match="no network"):
            fetch_official(timeout=0.3)
    assert socket.getdefaulttimeout() is None  # put back
