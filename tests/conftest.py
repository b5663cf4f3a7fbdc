"""Shared fixtures: offline guards, real sample data, tiny random models.

The suite never touches the network: the Hugging Face libraries are put in offline mode before
anything imports them, and any socket connection to a non-loopback address fails at once.
Real data comes from ``tests/data`` and ``examples/data`` (freely licensed, in the repository);
the few tests that need the non-free crops in ``../shared/data`` carry the ``shared_data`` marker:
they skip where ``../shared`` is absent, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from pathlib import Path

# Before any test module imports huggingface_hub / transformers (they read these once, at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Runs keep text features in ~/.cache by default: the suite keeps none (hermetic; the tests of the
# store set their own folder), and the CLI subprocesses inherit this.
os.environ["FRUGALVL_TEXT_CACHE"] = "off"
# torch.compile'd code (jbu_kernel="compiled") goes to ~/.cache by default: the suite's to its own folder.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"frugalvl-tests-inductor-{os.getuid()}")
)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_RS = REPO.parent / "shared" / "data" / "rs"
SHARED_WEIGHTS = REPO.parent / "shared" / "data" / "weights"
EXAMPLES = REPO / "examples" / "data"
TEST_DATA = REPO / "tests" / "data"


class NetworkAccessError(RuntimeError):
    """A test tried to reach a host other than this machine."""


def _is_local(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and the like
    host = str(address[0])
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already be network traffic


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: object) -> object:
    if not _is_local(address):
        raise NetworkAccessError(f"tests must not use the network (tried to connect to {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> object:
    if not _is_local(address):
        raise NetworkAccessError(f"tests must not use the network (tried to connect to {address!r})")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared_data: needs the non-free real crops in ../shared/data")


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each test starts with the library's logger as an import leaves it (``frugalvl.cli.main`` sets a
    stderr handler on it; one test's CLI call must not change what the next one prints)."""
    import logging

    yield
    logger = logging.getLogger("frugalvl")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def shared_file(name: str, folder: Path = SHARED_RS) -> Path:
    """A file of ``../shared/data``: skipped where absent, a failure under CI (which always has it)."""
    path = folder / name
    if not path.exists():
        message = f"shared test data {path} is not present (it ships beside the repository in ../shared)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; under CI it must be there")
        pytest.skip(message)
    return path


def landsat_rgb(size: int = 512) -> np.ndarray:
    """A real RGB image with no nodata: the interior of the bundled CC0 Landsat scene, ``size``² px."""
    import rasterio

    with rasterio.open(EXAMPLES / "landsat_rgb_byte.tif") as src:
        rgb = src.read([1, 2, 3]).transpose(1, 2, 0)
    y0, x0 = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
    return np.ascontiguousarray(rgb[y0 : y0 + size, x0 : x0 + size])


def landsat_file(folder: Path, name: str = "aerial.png", size: int = 512, crop: tuple[int, int] | None = None) -> Path:
    """The real CC0 Landsat interior written as an 8-bit image file (PNG, or JPEG by suffix) in ``folder``;
    ``crop`` = (height, width) of its top-left part."""
    from PIL import Image

    rgb = landsat_rgb(size)
    if crop is not None:
        rgb = np.ascontiguousarray(rgb[: crop[0], : crop[1]])
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def spacenet_labelled(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A real labelled crop: SpaceNet panchromatic (stretched to 8-bit RGB) and its building mask (0/1)."""
    import rasterio

    with rasterio.open(TEST_DATA / "spacenet_sample.tif") as src:
        pan = src.read(1).astype(np.float64)
    with rasterio.open(TEST_DATA / "spacenet_sample_buildings_mask.tif") as src:
        mask = src.read(1) > 127
    lo, hi = np.percentile(pan[pan > 0], (2, 98))
    gray = np.clip((pan - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[:size, :size, None], 3, axis=2)
    return np.ascontiguousarray(rgb), mask[:size, :size].astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory) -> Path:
    from frugalvl.testing.clip import write_tiny_openai_clip

    return write_tiny_openai_clip(tmp_path_factory.mktemp("clip") / "tiny-ViT.pt")


@pytest.fixture(scope="session")
def tiny_clip_model(tiny_clip_file):
    from frugalvl.models.clip import load_clip

    return load_clip(str(tiny_clip_file))
