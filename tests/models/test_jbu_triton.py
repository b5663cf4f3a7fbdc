"""The fused Triton JBU kernels against the PyTorch path: CPU interpreter on tiny shapes, GPU at real shapes."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

# Triton picks its interpreter when a kernel is decorated, i.e. when the module is imported, so the CPU
# check runs in a fresh interpreter with TRITON_INTERPRET=1 set before any import.
_INTERPRETED = r"""
import json
import torch
from frugalvl.models.jbu import JBUOne, adaptive_conv, adaptive_conv_unfold

torch.manual_seed(0)
res = {}
src = torch.randn(2, 5, 9, 11, requires_grad=True)
k = torch.randn(2, 9, 7, 9, requires_grad=True)
out = adaptive_conv(src, k, backend="triton")
ref = adaptive_conv_unfold(src, k)
res["forward"] = (out - ref).abs().max().item()
g = torch.randn_like(ref)
ours = torch.autograd.grad(out, (src, k), g)
plain = torch.autograd.grad(ref, (src, k), g)
res["grad_src"], res["grad_kernel"] = [(a - b).abs().max().item() for a, b in zip(ours, plain)]
half = adaptive_conv(src.detach().half(), k.detach().half(), backend="triton")
res["fp16_dtype"] = str(half.dtype)
res["fp16"] = (half.float() - ref).abs().max().item()
# 37 channels and 6x10 pixels: partial channel and pixel tiles on every edge
src2, k2 = torch.randn(1, 37, 10, 14), torch.randn(1, 25, 6, 10)
res["ragged"] = (adaptive_conv(src2, k2, backend="triton") - adaptive_conv_unfold(src2, k2)).abs().max().item()
up = JBUOne(feat_dim=6, radius=1)
with torch.no_grad():
    for p in up.parameters():
        p.add_(0.3 * torch.randn_like(p))
up.eval()
s, gd = torch.randn(1, 6, 2, 2), torch.randn(1, 3, 32, 32)
with torch.no_grad():
    a = up.set_kernel_backend("torch")(s, gd)
    b = up.set_kernel_backend("triton")(s, gd)
res["upsampler"] = (a - b).abs().max().item()
res["scale"] = a.abs().max().item()
print(json.dumps(res))
"""


def test_triton_kernels_match_torch_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETED], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["forward"] < 1e-5 and res["ragged"] < 1e-5
    assert res["grad_src"] < 1e-5 and res["grad_kernel"] < 1e-5
    assert res["fp16_dtype"] == "torch.float16" and res["fp16"] < 2e-2
    assert res["upsampler"] < 1e-5 * max(1.0, res["scale"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_forward_at_the_official_shape(dtype):
    """9 windows × 512 channels × 224², 11×11 taps (the last JBU-One stage of a 448² image)."""
    from frugalvl.models.jbu import adaptive_conv

    torch.manual_seed(0)
    src = torch.randn(9, 512, 234, 234, device="cuda")
    k = torch.softmax(torch.randn(9, 121, 224, 224, device="cuda"), 1)
    ref = adaptive_conv(src, k, backend="torch")
    out = adaptive_conv(src.to(dtype), k.to(dtype), backend="triton")
    assert out.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 5e-3
    assert (out.float() - ref).abs().max() < tol


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_backward_at_training_shape():
    from frugalvl.models.jbu import adaptive_conv

    torch.manual_seed(0)
    src = torch.randn(4, 512, 234, 234, device="cuda", requires_grad=True)
    k = torch.softmax(torch.randn(4, 121, 224, 224, device="cuda"), 1).requires_grad_(True)
    g = torch.randn(4, 512, 224, 224, device="cuda")
    ours = torch.autograd.grad(adaptive_conv(src, k, backend="triton"), (src, k), g)
    plain = torch.autograd.grad(adaptive_conv(src, k, backend="torch"), (src, k), g)
    for a, b in zip(ours, plain):
        assert (a - b).abs().max() < 1e-3 * max(1.0, b.abs().max().item())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_picks_triton_on_cuda_and_matches_torch():
    from frugalvl.models.jbu import JBUOne, resolve_kernel_backend

    assert resolve_kernel_backend("auto", torch.device("cuda")) == "triton"
    torch.manual_seed(0)
    up = JBUOne(512).cuda().eval()
    src, guide = torch.randn(9, 512, 14, 14, device="cuda"), torch.randn(9, 3, 224, 224, device="cuda")
    with torch.no_grad():
        a = up.set_kernel_backend("torch")(src, guide)
        b = up.set_kernel_backend("auto")(src, guide)
    assert (a - b).abs().max() < 1e-4
