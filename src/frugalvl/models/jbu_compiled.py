"""The JBU's kernel application compiled with ``torch.compile`` for the CPU (``jbu_kernel="compiled"``).

The plain CPU path (:func:`frugalvl.models.jbu.adaptive_conv`) applies a ``d×d`` per-pixel kernel as d²
in-place PyTorch operations per cache-sized block, each a full pass over the block: it is bound by
memory traffic and by the cost of launching 121 small operations (JBU-One's 11×11 kernel). Compiled by
inductor, the d² taps of a block become one C++ loop that keeps the running sum in a register and
reads each operand once per output element: 3–4× faster per block on the development CPU
(docs/methods/jbu_kernels.md#4-compiled-on-the-cpu). The taps are added in the same order
(``p = 0 .. d²−1``) from the same zero, so the result differs from the plain path only by how the
compiler rounds each multiply-add (a fused multiply-add skips one rounding): ~1e-7 relative.

Each block shape is compiled once per process (a JBU-One window of 224 has five) and inductor keeps the
compiled code on disk, by default in ``$XDG_CACHE_HOME/frugalvl/torch-compile`` (``~/.cache/…``)
unless ``TORCHINDUCTOR_CACHE_DIR`` names another folder: the first run on a machine spends about two
minutes compiling a JBU-One window's five shapes, later runs load them in about 8 s. It needs a C++
compiler (``g++``, or the one ``CXX`` names) and Python's C headers. Inference only: a kernel that
needs a gradient takes the plain path.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sysconfig
import threading
from pathlib import Path

import torch

from ..fileio import user_cache_folder

log = logging.getLogger(__name__)

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # inductor's own variable: where its compiled code is kept
SHAPES_PER_PROCESS = 64  # how many block signatures may be compiled before new ones run uncompiled


def default_compile_folder() -> Path:
    """Where the compiled code is kept unless ``TORCHINDUCTOR_CACHE_DIR`` says otherwise."""
    return user_cache_folder("torch-compile")


def compiler_available() -> bool:
    """Whether inductor can build its code here: a C++ compiler (the one ``CXX`` names, else ``g++`` or
    ``clang++``) and Python's C headers (its generated code is a Python extension)."""
    named = os.environ.get("CXX", "").strip()
    candidates = [named] if named else ["g++", "clang++"]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return headers.is_file() and any(shutil.which(name.split()[0]) for name in candidates)


def _block_sum(source: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``out[c,y,x] = Σ_p kernel[p,y,x] · source[c, y+i, x+j]`` over ``p = i·d + j`` in order, for one
    block: ``source`` ``[C, n+d-1, w+d-1]``, ``kernel`` ``[d², n, w]``. Written tap by tap so that
    inductor fuses the whole sum into one loop."""
    taps, n, w = kernel.shape
    d = int(round(taps**0.5))
    total = torch.zeros(source.shape[0], n, w, dtype=source.dtype, device=source.device)
    for p in range(taps):
        i, j = divmod(p, d)
        total = total + kernel[p : p + 1] * source[:, i : i + n, j : j + w]
    return total


_FIRST_CALLS = threading.Lock()
_READY: set[tuple] = set()  # the call signatures already compiled in this process


def use_compile_folder() -> str:
    """Point inductor at :func:`default_compile_folder` unless the user named a folder; return the folder.

    PyTorch fills ``TORCHINDUCTOR_CACHE_DIR`` with its own default (a folder under /tmp, often emptied
    at boot) as soon as some libraries are imported (open_clip does), so that value counts as unset.
    """
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        torch_default: str | None = os.path.abspath(default_cache_dir())
    except ImportError:  # another PyTorch layout: only an unset variable is ours to set
        torch_default = None
    current = os.environ.get(CACHE_ENV)
    if current is None or (torch_default is not None and os.path.abspath(current) == torch_default):
        os.environ[CACHE_ENV] = str(default_compile_folder())
    return os.environ[CACHE_ENV]


@functools.lru_cache(maxsize=1)
def _compiled():
    folder = use_compile_folder()  # keep the compiled code where later runs find it
    log.info("compiling the JBU kernel application for each block shape (kept in %s)", folder)
    # cpp.threads=1: the blocks already run side by side on single-threaded workers (jbu._run_blocks).
    # Not fullgraph: should the variants ever run out, a new shape runs uncompiled (same sums) instead of failing.
    return torch.compile(_block_sum, dynamic=False, options={"cpp.threads": 1})


def _signature(source: torch.Tensor, kernel: torch.Tensor) -> tuple:
    """What the compiled code is specialised on: shapes, strides, dtypes and the thread's PyTorch state."""
    return (
        tuple(source.shape),
        source.stride(),
        tuple(kernel.shape),
        kernel.stride(),
        source.dtype,
        kernel.dtype,
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
        torch.get_num_threads(),
    )


def block_sum(source: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """:func:`_block_sum` through ``torch.compile`` (compiled on the first call with each signature).

    Blocks run on several threads at once. A first call with a new signature holds a lock while it
    compiles: otherwise a second thread with the same signature, finding no compiled code yet, would
    compile it again (PyTorch keeps both and counts both against its limit of variants).
    """
    compiled = _compiled()
    key = _signature(source, kernel)
    if key in _READY:
        return compiled(source, kernel)
    import torch._dynamo

    # One compiled variant per signature (static shapes run ~1.5× faster than one dynamic kernel here);
    # PyTorch's default limit of 8 variants (a setting of the calling thread) would leave a scene's
    # odd-sized edge tiles to the plain path.
    with _FIRST_CALLS, torch._dynamo.config.patch(recompile_limit=SHAPES_PER_PROCESS):
        out = compiled(source, kernel)
        _READY.add(key)
    return out
