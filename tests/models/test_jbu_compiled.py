"""The JBU kernel application compiled with torch.compile (jbu_kernel="compiled", CPU)."""

from pathlib import Path

import pytest
import torch

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.models import jbu, jbu_compiled
from frugalvl.models.jbu import JBUOne, adaptive_conv, adaptive_conv_unfold, resolve_kernel_backend

needs_compiler = pytest.mark.skipif(
    not jbu_compiled.compiler_available(),
    reason="needs a C++ compiler and Python's headers for torch.compile (apt-get install g++ python3-dev)",
)


def _operands(seed: int = 0):
    # 2 samples × 128 channels × 16 rows: eight blocks of one shape (64 channels × 8 rows), one compile
    torch.manual_seed(seed)
    kernel = torch.rand(2, 9, 16, 20)
    kernel = kernel / kernel.sum(1, keepdim=True)
    return torch.randn(2, 128, 18, 22), kernel


@needs_compiler
def test_compiled_blocks_equal_the_plain_shift_and_accumulate(monkeypatch):
    src, kernel = _operands()
    calls = []
    real = jbu_compiled.block_sum
    monkeypatch.setattr(jbu, "block_sum", lambda s, k: calls.append(tuple(s.shape)) or real(s, k))
    with torch.inference_mode():
        plain = adaptive_conv(src, kernel, "torch")
        assert not calls
        compiled = adaptive_conv(src, kernel, "compiled")
    assert calls == [(64, 10, 22)] * 8  # every block went through the compiled sum
    # same taps in the same order: only the rounding of each multiply-add may differ
    assert compiled.shape == plain.shape and compiled.dtype == plain.dtype
    assert torch.allclose(compiled, plain, rtol=0, atol=1e-6), (compiled - plain).abs().max()
    assert torch.allclose(compiled, adaptive_conv_unfold(src, kernel), rtol=0, atol=1e-5)
    assert not torch.equal(compiled, torch.zeros_like(compiled))
    with torch.no_grad():  # other operands, same shape: the compiled code is reused, not a stale result
        src2, kernel2 = _operands(seed=1)
        assert torch.allclose(
            adaptive_conv(src2, kernel2, "compiled"), adaptive_conv(src2, kernel2, "torch"), atol=1e-6
        )


@needs_compiler
def test_a_kernel_that_needs_a_gradient_takes_the_plain_path(monkeypatch):
    src, kernel = _operands()
    monkeypatch.setattr(jbu, "block_sum", lambda s, k: pytest.fail("the compiled sum has no backward"))
    src.requires_grad_(True)
    out = adaptive_conv(src, kernel, "compiled")
    out.sum().backward()
    assert src.grad is not None and torch.isfinite(src.grad).all()


def test_compiled_is_for_the_cpu_and_needs_a_compiler(monkeypatch):
    with pytest.raises(UserError, match="compiled is for the CPU") as err:
        resolve_kernel_backend("compiled", torch.device("cuda"))
    assert render_error(err.value).startswith("--jbu-kernel compiled is for the CPU: use --jbu-kernel auto")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(UserError, match="needs a C..? compiler") as err:
        resolve_kernel_backend("compiled", torch.device("cpu"))
    assert "apt-get install g++" in render_error(err.value) and "--jbu-kernel torch" in render_error(err.value)
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(jbu_compiled.sysconfig, "get_paths", lambda: {"include": "/no/python/headers"})
    assert not jbu_compiled.compiler_available()  # a compiler alone cannot build the generated extension
    up = JBUOne(feat_dim=4, radius=1).set_kernel_backend("compiled")  # the choice itself is known
    assert {stage.kernel_backend for stage in up.stages()} == {"compiled"}
    with pytest.raises(UserError, match="C\\+\\+ compiler"), torch.no_grad():  # one line at the first use
        up(torch.randn(1, 4, 3, 3), torch.rand(1, 3, 48, 48))


def test_the_compiled_code_is_kept_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert jbu_compiled.default_compile_folder() == tmp_path / "frugalvl" / "torch-compile"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert jbu_compiled.default_compile_folder() == Path.home() / ".cache" / "frugalvl" / "torch-compile"


def test_inductor_is_pointed_at_the_user_cache_unless_told_otherwise(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ours = str(tmp_path / "frugalvl" / "torch-compile")
    monkeypatch.delenv(jbu_compiled.CACHE_ENV, raising=False)
    assert jbu_compiled.use_compile_folder() == ours
    monkeypatch.setenv(jbu_compiled.CACHE_ENV, default_cache_dir())  # what importing open_clip leaves there
    assert jbu_compiled.use_compile_folder() == ours
    monkeypatch.setenv(jbu_compiled.CACHE_ENV, str(tmp_path / "mine"))  # the user's choice stays
    assert jbu_compiled.use_compile_folder() == str(tmp_path / "mine")
