import os

import pytest
import torch
import torch.nn.functional as F

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.models.jbu import JBUOne, JBUStack, adaptive_conv, adaptive_conv_unfold
from frugalvl.models.upsampler import load_upsampler, save_upsampler, upsampler_from_state
from tests.conftest import SHARED_WEIGHTS, shared_file


def naive_adaptive_conv(src, kernel):
    """float64 loops: out[b,c,y,x] = Σ_ij K[b, i*d+j, y, x] · src[b, c, y+i, x+j]."""
    b, taps, h, w = kernel.shape
    d = int(taps**0.5)
    out = torch.zeros(b, src.shape[1], h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for i in range(d):
                for j in range(d):
                    out[:, :, y, x] += kernel[:, i * d + j, y, x, None].double() * src[:, :, y + i, x + j].double()
    return out


def test_adaptive_conv_against_float64_loops():
    torch.manual_seed(0)
    src, kernel = torch.randn(2, 3, 9, 10), torch.randn(2, 9, 7, 8)
    ref = naive_adaptive_conv(src, kernel)
    assert torch.allclose(adaptive_conv(src, kernel).double(), ref, atol=1e-5)
    assert torch.allclose(adaptive_conv_unfold(src, kernel).double(), ref, atol=1e-5)


def test_adaptive_conv_gradients_match_autograd_of_the_plain_formula():
    torch.manual_seed(0)
    src = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(2, 9, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(adaptive_conv, (src, kernel))
    grad = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    ours = torch.autograd.grad(adaptive_conv(src, kernel), (src, kernel), grad)
    plain = torch.autograd.grad(adaptive_conv_unfold(src, kernel), (src, kernel), grad)
    assert all(torch.allclose(a, b) for a, b in zip(ours, plain))


def reference_stage(stage, source, guidance):
    """One JBU stage written the straightforward way (unfold everything), in float64."""
    stage = stage.double()
    source, guidance = source.double(), guidance.double()
    r, d = stage.radius, stage.diameter
    b, _, h, w = guidance.shape
    keys = stage.range_proj(guidance)
    nb = F.unfold(F.pad(keys, [r] * 4, mode="reflect"), d).view(b, keys.shape[1], d * d, h, w)
    temp = stage.range_temp.exp().clamp(1e-4, 1e4)
    rng = torch.softmax(temp * (nb * keys[:, :, None]).sum(1), dim=1)
    lin = torch.linspace(-1, 1, d, dtype=torch.float64)
    spatial = torch.tensor([[-(lin[i] ** 2 + lin[j] ** 2) for j in range(d)] for i in range(d)]).reshape(1, -1, 1, 1)
    spatial = torch.exp(spatial / (2 * stage.sigma_spatial**2))
    k = rng * spatial
    k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
    k = k + 0.1 * stage.fixup_proj(torch.cat([k, guidance], 1))
    hr = F.pad(F.interpolate(source, size=(h, w), mode="bicubic", align_corners=False), [r] * 4, mode="reflect")
    return naive_adaptive_conv(hr, k)


def _randomise(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module.eval()


def test_stage_matches_reference():
    up = _randomise(JBUOne(feat_dim=4, radius=2))
    src, guide = torch.randn(1, 4, 3, 4), torch.randn(1, 3, 6, 8)
    with torch.no_grad():
        ours = up.up(src, guide).double()
        ref = reference_stage(up.up, src, guide)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_full_upsampler_shape_and_commuted_order_is_exact():
    up = _randomise(JBUOne(feat_dim=6)).double()
    src, guide = torch.randn(2, 6, 3, 3, dtype=torch.float64), torch.randn(2, 3, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        plain = up(src, guide)
        commuted = up.forward_commuted(src, guide)
    assert plain.shape == (2, 6, 48, 48)
    assert torch.allclose(plain, commuted, atol=1e-10)


def test_parameter_counts_match_spec():
    assert sum(p.numel() for p in JBUOne(512).parameters()) == 293_729
    assert sum(p.numel() for p in JBUStack(512).parameters()) == 287_588


def test_official_layout_round_trip(tmp_path):
    up = _randomise(JBUOne(feat_dim=8))
    save_upsampler(tmp_path / "up.ckpt", up, epoch=1)
    raw = torch.load(tmp_path / "up.ckpt", weights_only=True)
    assert set(raw["state_dict"]) == {f"upsampler.{k}" for k in up.state_dict()}
    assert "upsampler.up.fixup_proj.3.weight" in raw["state_dict"]
    back = load_upsampler(tmp_path / "up.ckpt")
    assert isinstance(back, JBUOne) and not back.training
    x, g = torch.randn(1, 8, 4, 4), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(x, g), up(x, g))
    # a bare state dict (no Lightning wrapper, no prefix) loads too
    assert isinstance(upsampler_from_state(up.state_dict()), JBUOne)


@pytest.mark.shared_data
def test_real_featup_jbu_stack_checkpoint():
    path = shared_file("featup_clip_jbu_stack_cocostuff.ckpt", SHARED_WEIGHTS)
    up = load_upsampler(path)
    assert isinstance(up, JBUStack) and up.up1.diameter == 7
    torch.manual_seed(0)
    with torch.no_grad():
        out = up(torch.randn(1, 512, 2, 2), torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 512, 32, 32) and torch.isfinite(out).all()


def test_wrong_checkpoints_are_rejected(tmp_path):
    torch.save({"state_dict": {"model.encoder.weight": torch.zeros(3)}}, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="not a JBU upsampler"):
        load_upsampler(tmp_path / "other.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot be read"):
        load_upsampler(tmp_path / "junk.ckpt")
    with pytest.raises(UserError, match="does not exist"):
        load_upsampler(tmp_path / "missing.ckpt")


def _potsdam_guidance(size: int, raw: bool) -> torch.Tensor:
    import cv2

    bgr = cv2.imread(str(shared_file("potsdam_2_10_0_0_512_512.png")))
    rgb = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[:size, :size].copy()).permute(2, 0, 1)[None].float()
    if raw:  # 0–255 values: peaky range kernels whose softmax underflows to subnormals
        return rgb
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1) * 255
    return (rgb - mean) / std


@pytest.mark.shared_data
@pytest.mark.parametrize("raw", [False, True])
def test_cpu_fast_path_is_bit_identical_on_the_real_checkpoint(monkeypatch, raw):
    """Thread pool + subnormal flush against the plain serial loop with the softmax as computed."""
    from frugalvl.models import jbu

    up = load_upsampler(shared_file("featup_clip_jbu_stack_cocostuff.ckpt", SHARED_WEIGHTS))
    guidance = _potsdam_guidance(32, raw)
    torch.manual_seed(0)
    src = torch.randn(1, 512, 2, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            fast = up(src, guidance)
            assert torch.get_num_threads() == 2  # restored after the pool
            stage_weights = up.up1.range_kernel(F.adaptive_avg_pool2d(guidance, (8, 8)))
            monkeypatch.setattr(jbu, "_run_blocks", lambda task, blocks: [task(b) for b in blocks])
            monkeypatch.setattr(jbu, "_flush_subnormals", lambda w: w)
            plain = up(src, guidance)
            raw_weights = up.up1.range_kernel(F.adaptive_avg_pool2d(guidance, (8, 8)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fast, plain)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((stage_weights > 0) & (stage_weights < tiny)).any()
    if raw:  # the case is a real one: the plain softmax does produce subnormals here
        assert ((raw_weights > 0) & (raw_weights < tiny)).any()


def test_pool_keeps_inference_mode_and_autograd_paths():
    up = _randomise(JBUOne(feat_dim=8, radius=2))
    src, guide = torch.randn(2, 8, 2, 2), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = up(src, guide)
    with torch.inference_mode():
        assert torch.equal(up(src, guide), ref)
    src.requires_grad_(True)
    out = up(src, guide)  # training path: autograd through the range kernel and the kernel application
    out.square().sum().backward()
    assert torch.allclose(out.detach(), ref) and src.grad is not None and torch.isfinite(src.grad).all()


def test_kernel_backend_choice():
    from frugalvl.models.jbu import resolve_kernel_backend

    up = JBUOne(feat_dim=4)
    assert up.set_kernel_backend("torch") is up and up.up.kernel_backend == "torch"
    with pytest.raises(
        UserError, match="^jbu_kernel .cuda. is unknown: choose one of auto, triton, torch, compiled"
    ) as err:
        up.set_kernel_backend("cuda")
    assert render_error(err.value).startswith("--jbu-kernel 'cuda' is unknown")
    if os.environ.get("TRITON_INTERPRET") != "1":
        assert resolve_kernel_backend("auto", torch.device("cpu")) == "torch"
        with pytest.raises(UserError, match="needs a CUDA device"):
            resolve_kernel_backend("triton", torch.device("cpu"))


@pytest.mark.parametrize("shape,size", [((1, 8, 14, 14), (28, 28)), ((2, 3, 7, 11), (14, 30)), ((1, 4, 5, 9), (5, 4))])
def test_cpu_bicubic_matches_interpolate(shape, size):
    from frugalvl.models.jbu import bicubic

    torch.manual_seed(0)
    x = torch.randn(*shape)
    ref = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    out = bicubic(x, size)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    x64 = x.double()  # separability is exact: only the order of float sums differs
    assert torch.allclose(bicubic(x64, size), F.interpolate(x64, size=size, mode="bicubic"), atol=1e-12)


def test_cpu_bicubic_weights_made_in_inference_mode_still_train():
    from frugalvl.models.jbu import bicubic

    with torch.inference_mode():
        bicubic(torch.randn(1, 2, 6, 6), (12, 12))  # fills the weight cache inside inference mode
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    bicubic(x, (12, 12)).square().sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    F.interpolate(ref, size=(12, 12), mode="bicubic").square().sum().backward()
    assert torch.allclose(x.grad, ref.grad, atol=1e-5)
