"""LoRA fine-tuning on a selection (docs/methods/coido_finetune.md) with the tiny LLaVA and easy-vqa (CPU, offline)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.select import accelerate_state as A
from frugalvl.testing.easyvqa import write_easyvqa_llava
from frugalvl.testing.llava import build_tiny_llava
from frugalvl.train.finetune import data as D
from frugalvl.train.finetune import deepspeed as DS
from frugalvl.train.finetune import loop as L
from frugalvl.train.finetune import merge as MG
from frugalvl.train.finetune import model as M
from frugalvl.train.finetune import settings as S

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(subset JSON, image root, tiny LLaVA folder): 24 easy-vqa samples with images + 4 text-only."""
    root = tmp_path_factory.mktemp("finetune")
    data, images = write_easyvqa_llava(root, n_images=12, n_text=4)
    words = [t["value"].replace("<image>", "") for r in json.loads(data.read_text()) for t in r["conversations"]]
    return data, images, build_tiny_llava(root / "tiny-llava", extra_text=words)


def small(tiny, **kw) -> S.FinetuneSettings:
    data, images, mllm = tiny
    base = dict(
        mllm=str(mllm),
        image_root=str(images),
        lora_r=8,
        lora_alpha=16,
        lr=5e-3,
        projector_lr=5e-4,
        global_batch=4,
        batch_size=4,
        save_steps=2,
        num_workers=0,
        gradient_checkpointing=False,
        progress=False,
        warmup_ratio=0.1,
    )
    base.update(kw)
    return S.FinetuneSettings(**base)


def _history(out: Path) -> list[dict]:
    return json.loads((out / "history.json").read_text())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def plain_run(tiny, tmp_path_factory):
    """One uninterrupted run (7 steps: 6 image batches + 1 text batch), checkpoints every 2 steps."""
    out = tmp_path_factory.mktemp("plain") / "out"
    L.finetune(tiny[0], out, small(tiny))
    return out


# ------------------------------------------------------------------------------------- recipe


def test_defaults_are_the_llava15_lora_recipe():
    s = S.FinetuneSettings()
    assert (s.lora_r, s.lora_alpha, s.lr, s.projector_lr, s.epochs, s.global_batch) == (128, 256, 2e-4, 2e-5, 1, 128)
    assert (s.max_length, s.image_aspect_ratio, s.weight_decay, s.warmup_ratio, s.lora_dropout) == (
        2048,
        "pad",
        0.0,
        0.03,
        0.05,
    )
    assert s.group_by_modality and s.gradient_checkpointing and s.precision == "auto"
    assert (M.RECIPE_VISION_PX, M.RECIPE_PROJECTOR) == (336, "mlp2x_gelu")
    # effective batch 128: ICONS 16/device on 8 GPUs, COINCIDE 4/device × 8 accumulation on 4 GPUs
    assert S.grad_accum(s, 8) == 1 and S.grad_accum(replace(s, batch_size=4), 4) == 8
    with pytest.raises(UserError, match="global_batch 128 is not a multiple of batch_size 3"):
        S.grad_accum(replace(s, batch_size=3), 1)


def test_step_ends_keep_only_full_accumulation_groups():
    assert D.step_ends([[0] * 7, [0] * 5], 3) == [2, 5, 9]  # 7 -> 2 groups (1 left), 5 -> 1 group (2 left)
    assert D.step_ends([[0] * 3], 1) == [0, 1, 2]
    assert D.step_ends([[0] * 2], 4) == []


def test_deepspeed_configs_parse_and_fill():
    for name, stage in (("zero2", 2), ("zero3", 3)):
        path = DS.deepspeed_config_path(name)
        assert path.parent.name == "configs" and path.is_file()
        config = json.loads(path.read_text())
        assert config["zero_optimization"]["stage"] == stage
        filled = DS.fill_deepspeed_config(
            config,
            micro_batch=4,
            grad_accum_steps=8,
            world=4,
            max_grad_norm=1.0,
            mixed_precision="bf16",
            hidden_size=4096,
        )
        assert "auto" not in json.dumps(filled)
        assert (
            filled["train_micro_batch_size_per_gpu"],
            filled["gradient_accumulation_steps"],
            filled["train_batch_size"],
        ) == (4, 8, 128)
        assert filled["bf16"]["enabled"] is True and filled["fp16"]["enabled"] is False
        assert filled["zero_optimization"]["reduce_bucket_size"] == 4096 * 4096
        assert config["train_batch_size"] == "auto"  # the shipped file is left as is
    assert (
        DS.fill_deepspeed_config(
            {"x": {"y": 1}},
            micro_batch=1,
            grad_accum_steps=1,
            world=1,
            max_grad_norm=0,
            mixed_precision="no",
            hidden_size=8,
        )["train_batch_size"]
        == 1
    )
    with pytest.raises(UserError, match="cannot fill"):
        DS.fill_deepspeed_config(
            {"optimizer": {"lr": "auto"}},
            micro_batch=1,
            grad_accum_steps=1,
            world=1,
            max_grad_norm=1,
            mixed_precision="no",
            hidden_size=8,
        )
    with pytest.raises(UserError, match="zero2, zero3"):
        DS.deepspeed_config_path("zero9")


@pytest.fixture
def cli_logging():
    """frugalvl.cli.main binds the 'frugalvl' logger to the (captured) stderr of the moment; put it back."""
    import logging

    logger = logging.getLogger("frugalvl")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_launch_line_and_argument_round_trip(tiny, capsys, cli_logging):
    from frugalvl.cli import build_parser, main
    from frugalvl.commands.select_finetune import finetune_argv, finetune_settings

    data, images, mllm = tiny
    cmd = DS.launch_command(["a.json", "-o", "out"], 4)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4" and "--multi_gpu" in cmd
    assert cmd[-7:] == ["-m", "frugalvl", "select", "finetune", "a.json", "-o", "out"]
    torchrun = DS.launch_command(["a.json"], 2, "torchrun")
    assert torchrun[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node" in torchrun

    argv = [
        "select",
        "finetune",
        str(data),
        "-o",
        "o",
        "--mllm",
        str(mllm),
        "--image-root",
        str(images),
        "--batch-size",
        "4",
        "--lora-r",
        "16",
        "--no-gradient-checkpointing",
        "--deepspeed",
        "zero3",
        "--merge",
    ]
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(["select", "finetune", *finetune_argv(args)])
    assert finetune_settings(again) == finetune_settings(args)
    s = finetune_settings(args)
    assert (s.batch_size, s.lora_r, s.gradient_checkpointing, s.deepspeed, s.lr) == (4, 16, False, "zero3", 2e-4)
    assert again.merge and not again.force

    assert main([*argv, "--num-processes", "8", "--dry-run"]) == 0
    line = capsys.readouterr().out.strip().split()
    assert "accelerate.commands.launch" in line and line[line.index("--num_processes") + 1] == "8"
    assert line[line.index("--deepspeed") + 1] == "zero3" and "--num-processes" not in line


def test_missing_images_and_settings_are_one_line_errors(tiny, tmp_path):
    data, images, mllm = tiny
    with pytest.raises(UserError, match="set image_root"):
        D.read_records(data, str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        D.read_records(tmp_path / "none.json", None)
    with pytest.raises(UserError, match="no base model: give mllm"):
        S.check_settings(S.FinetuneSettings())
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(UserError, match="pip install deepspeed"):
            s = small(tiny, deepspeed="zero3")
            A.make_accelerator(s, 1, DS.run_deepspeed_config(s, 1, "no"))
    with pytest.raises(UserError, match="no full step"):
        L.finetune(data, tmp_path / "o", small(tiny, global_batch=64))  # 16 accumulation steps > 7 batches


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("lora_r", 0, "lora_r must be at least 1, got 0"),
        ("batch_size", -2, "batch_size must be at least 1"),
        ("save_steps", -1, "save_steps must be 0 or more"),
        ("lr", 0.0, "lr must be a finite number > 0"),
        ("projector_lr", float("nan"), "projector_lr must be a finite number > 0"),
        ("max_grad_norm", float("inf"), "max_grad_norm must be a finite number >= 0"),
        ("weight_decay", -0.1, "weight_decay must be a finite number >= 0"),
        ("warmup_ratio", 1.5, "warmup_ratio must be in [0, 1]"),
        ("lora_dropout", 1.0, "lora_dropout must be in [0, 1)"),
        ("precision", "fp8", "precision 'fp8' is unknown"),
        ("image_aspect_ratio", "crop", "image_aspect_ratio 'crop': choose one of pad, resize"),
    ],
)
def test_settings_refuse_values_out_of_range_naming_the_field(field, value, words):
    with pytest.raises(ValueError) as err:
        S.FinetuneSettings(**{field: value})
    assert str(err.value).startswith(words), str(err.value)
    assert "--" not in str(err.value)
    # the edges of the ranges are accepted
    S.FinetuneSettings(lora_dropout=0.0, warmup_ratio=1.0, max_grad_norm=0.0, save_steps=0, keep_checkpoints=0)


@pytest.mark.parametrize(
    "option, value, flag",
    [
        ("--lora-r", "0", "--lora-r"),
        ("--projector-lr", "0", "--projector-lr"),  # not --lr, given too
        ("--lora-dropout", "1", "--lora-dropout"),
        ("--max-grad-norm", "nan", "--max-grad-norm"),
    ],
)
def test_cli_names_the_option_of_a_refused_setting(tiny, option, value, flag, capsys, cli_logging):
    from frugalvl.cli import main

    data, images, mllm = tiny
    argv = ["select", "finetune", str(data), "-o", "o", "--mllm", str(mllm), "--lr", "1e-3", option, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].split(": ")[2] == flag, err


def test_cli_names_force_when_the_output_holds_other_settings(tiny, tmp_path, monkeypatch, capsys, cli_logging):
    from frugalvl.cli import main

    data, images, mllm = tiny

    def refuses(data, out, settings, **kw):
        raise A.SettingsChanged("library text", Path(out) / "checkpoints/step-2", ["lr", "seed"])

    monkeypatch.setattr(L, "finetune", refuses)
    assert main(["select", "finetune", str(data), "-o", str(tmp_path / "o"), "--mllm", str(mllm)]) == 2
    err = capsys.readouterr().err
    assert "step-2 was made with other settings (lr, seed)" in err and "pass --force to start over" in err


# ------------------------------------------------------------------------------------- training


def test_checkpoints_hold_adapter_projector_and_training_state(plain_run):
    history = _history(plain_run)
    assert [h["step"] for h in history] == list(range(1, 8))
    # lr: one warm-up step from 0, then cosine; the projector at a tenth of the LoRA rate throughout
    assert history[0]["lr"] == 0.0 and history[1]["lr"] == pytest.approx(5e-3)
    assert all(h["projector_lr"] == pytest.approx(h["lr"] / 10) for h in history)
    ckpt = L.checkpoint_dirs(plain_run)
    assert [p.name for p in ckpt] == ["step-6"]  # keep_checkpoints = 1
    names = set(_weights(ckpt[-1] / "model.safetensors"))
    assert names and all("lora_" in n or "multi_modal_projector.modules_to_save" in n for n in names)
    assert any("multi_modal_projector" in n for n in names) and any("lora_A" in n for n in names)
    for part in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", L.STATE_FILE):
        assert (ckpt[-1] / part).is_file(), part
    state = json.loads((ckpt[-1] / L.STATE_FILE).read_text())
    assert state["step"] == 6 and state["history"] == history[:6]
    assert (plain_run / "adapter/adapter_config.json").is_file()
    adapter = _weights(plain_run / "adapter/adapter_model.safetensors")
    assert not any("vision_tower" in n or "embed_tokens" in n for n in adapter)


def _mean_loss(model, llava, samples) -> float:
    """Mean LM loss over the whole set, in micro-batches of 4 (eval mode, no dropout)."""
    from frugalvl.select.batching import micro_batches

    plan = [list(range(i, min(i + 4, len(samples)))) for i in range(0, len(samples), 4)]
    losses = []
    with torch.no_grad():
        for b in micro_batches(D.as_subset(samples), plan, llava, 2048, "pad"):
            losses.append(
                float(
                    model(
                        input_ids=b.input_ids,
                        attention_mask=b.attention_mask,
                        pixel_values=b.pixel_values,
                        labels=b.labels,
                    ).loss
                )
            )
    return sum(losses) / len(losses)


def test_loss_falls_on_a_tiny_set(tiny, plain_run):
    from peft import PeftModel

    from frugalvl.models.llava import load_llava

    data, images, mllm = tiny
    losses = [h["loss"] for h in _history(plain_run)]
    assert torch.isfinite(torch.tensor(losses)).all() and losses[-1] < losses[0] - 0.2
    samples = D.read_records(data, str(images))
    llava = load_llava(str(mllm))
    before = _mean_loss(llava.model.eval(), llava, samples)
    after = _mean_loss(PeftModel.from_pretrained(llava.model, str(plain_run / "adapter")).eval(), llava, samples)
    assert after < before - 0.2, (before, after)  # measured 4.62 -> 4.29 after one epoch (7 steps)


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from frugalvl.select import accelerate_state as A
from frugalvl.train.finetune import loop as L
from frugalvl.train.finetune import settings as S

real = A.write_json

def write_json(path, obj, *a, **k):
    if ".step-6.tmp" in str(path):            # kill -9 in the middle of saving checkpoint 6
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, obj, *a, **k)

A.write_json = write_json
settings = S.FinetuneSettings(**{k: v for k, v in {SETTINGS}.items()})
L.finetune(Path(sys.argv[1]), Path(sys.argv[2]), settings)
"""


def test_resume_after_kill_9_gives_the_uninterrupted_loss_curve(tiny, plain_run, tmp_path):
    from dataclasses import asdict

    out = tmp_path / "out"
    script = tmp_path / "killed.py"
    # with gradient checkpointing (a setting that must not change the result) against the plain run without it
    resumable = small(tiny, gradient_checkpointing=True)
    script.write_text(textwrap.dedent(KILLED_RUN).replace("{SETTINGS}", repr(asdict(resumable))))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny[0]), str(out)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in L.checkpoint_dirs(out)] == ["step-4"]  # step 6 was cut short
    assert (out / "checkpoints/.step-6.tmp").is_dir() and not (out / "history.json").exists()
    with pytest.raises(UserError, match="lr"):
        L.finetune(tiny[0], out, small(tiny, lr=1e-3))  # other settings: refuse to mix
    L.finetune(tiny[0], out, small(tiny))  # resumes at step 4
    assert _history(out) == _history(plain_run)
    a, b = (
        _weights(out / "adapter/adapter_model.safetensors"),
        _weights(plain_run / "adapter/adapter_model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    L.finetune(tiny[0], out, small(tiny))  # finished: nothing to do
    assert _history(out) == _history(plain_run)


def test_merged_model_equals_base_plus_adapter(tiny, plain_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from frugalvl.models.llava import load_llava
    from frugalvl.select.batching import micro_batches

    data, images, mllm = tiny
    merged_dir = MG.merge_adapter(str(mllm), plain_run / "adapter", tmp_path / "merged")
    config = json.loads((merged_dir / "config.json").read_text())
    assert (
        config["architectures"] == ["LlavaForConditionalGeneration"]
        and not (merged_dir / "adapter_config.json").exists()
    )
    merged = LlavaForConditionalGeneration.from_pretrained(merged_dir).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # the processor as lmms-eval's llava_hf uses it: Vicuna v1 chat template, 16 image tokens for a 32-px CLIP
    processor = AutoProcessor.from_pretrained(merged_dir)
    assert type(processor).__name__ == "LlavaProcessor"
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is the shape ?"}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    assert prompt.startswith("A chat between") and prompt.endswith(
        "USER: <image>\nwhat colour is the shape ? ASSISTANT:"
    )
    from PIL import Image

    encoded = processor(images=Image.new("RGB", (40, 30), "red"), text=prompt, return_tensors="pt")
    assert int((encoded["input_ids"] == merged.config.image_token_id).sum()) == 16
    assert (
        merged.generate(**encoded, max_new_tokens=2, min_new_tokens=2, do_sample=False).shape[1]
        == encoded["input_ids"].shape[1] + 2
    )

    llava = load_llava(str(mllm))
    reference = PeftModel.from_pretrained(llava.model, str(plain_run / "adapter")).eval()
    samples = D.read_records(data, str(images))
    batch = micro_batches(D.as_subset(samples), [[0, 1, 2, 3]], llava, 2048, "pad")[0]
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values)
    with torch.no_grad():
        want, got = reference(**inputs).logits, merged(**inputs).logits
        base = LlavaForConditionalGeneration.from_pretrained(mllm).eval()(**inputs).logits
    assert (got - want).abs().max() < 1e-5
    assert (base - want).abs().max() > 1e-3  # the adapter did change the model


def test_two_processes_write_a_checkpoint_of_the_same_shapes(tiny, plain_run, tmp_path):
    """2 CPU processes (accelerate launch, gloo) through the CLI; about 40 s, mostly start-up."""
    data, images, mllm = tiny
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "frugalvl",
        "select",
        "finetune",
        str(data),
        "-o",
        str(out),
        "--mllm",
        str(mllm),
        "--image-root",
        str(images),
        "--num-processes",
        "2",
        "--batch-size",
        "2",
        "--global-batch",
        "4",
        "--lora-r",
        "8",
        "--lora-alpha",
        "16",
        "--lr",
        "5e-3",
        "--projector-lr",
        "5e-4",
        "--warmup-ratio",
        "0.1",
        "--save-steps",
        "2",
        "--num-workers",
        "0",
        "--no-gradient-checkpointing",
        "--no-progress",
        "--main-process-port",
        str(29500 + os.getpid() % 1000),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = L.checkpoint_dirs(out)[-1]
    one = L.checkpoint_dirs(plain_run)[-1]
    assert two.name == one.name
    a, b = _weights(two / "model.safetensors"), _weights(one / "model.safetensors")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert (two / "random_states_0.pkl").is_file() and (two / "random_states_1.pkl").is_file()
    history = _history(out)
    assert len(history) == len(_history(plain_run)) and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert json.loads((out / "finetune.json").read_text())["key"]["world"] == 2
