"""JBU-One forward + backward + optimiser step at SimFeatUp's training shapes, per kernel backend.

The upsampler part of a ``train-upsampler`` step (docs/methods/simfeatup.md#training): a batch of 14² 512-d feature maps
upsampled to 224² under image guidance, a loss on the result, backward through the four stages
(range kernel, fix-up MLP and kernel application), one NAdam step. Times the PyTorch
shift-and-accumulate and, on CUDA, the fused Triton kernels (``--jbu-kernel``), and prints the largest
gradient difference between them. Random weights and inputs: numbers are for speed.

    python bench/jbu_train_step.py --device cuda [--batch 4] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from frugalvl.models.jbu import JBUOne


def run(backend: str, device: str, batch: int, steps: int, dtype: torch.dtype) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)
    up = JBUOne(512).to(device).train().set_kernel_backend(backend)
    opt = torch.optim.NAdam(up.parameters(), lr=1e-3)
    src = torch.randn(batch, 512, 14, 14, device=device)
    guide = torch.randn(batch, 3, 224, 224, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    grad = None
    times = []
    for step in range(steps + 1):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            torch.manual_seed(step)  # same dropout masks for both backends
            loss = up(src, guide).float().square().mean()
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grad = up.up.fixup_proj[3].weight.grad.detach().clone()
        opt.step()
        sync()
        if step:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = ap.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    backends = ["torch", "triton"] if args.device.startswith("cuda") else ["torch"]
    rows = [(b, *run(b, args.device, args.batch, args.steps, dtype)) for b in backends]
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\nJBU-One train step (fwd+bwd+NAdam), batch {args.batch}, 512×14²→224², {args.precision}, {name}")
    print(f"{'kernel':<10} {'s/step':>9} {'steps/s':>9} {'max |Δ grad|':>13}")
    for backend, t, grad in rows:
        print(f"{backend:<10} {t:>9.3f} {1 / t:>9.2f} {(grad - rows[0][2]).abs().max().item():>13.2e}")


if __name__ == "__main__":
    main()
