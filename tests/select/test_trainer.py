"""Coupled training end to end on a hand-made work folder with a tiny random LLaVA (CPU, offline)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frugalvl.commands._settings import render_error
from frugalvl.errors import UserError
from frugalvl.select import batching as B
from frugalvl.select import checkpoints as C
from frugalvl.select import mllm as M
from frugalvl.select import prompting as P
from frugalvl.select import trainer as T
from frugalvl.select import workdir as W
from frugalvl.select.scorer import load_scorer, read_scorer_checkpoint
from frugalvl.select.train_settings import TrainSettings
from frugalvl.testing.llava import build_tiny_llava

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "rectangle", "triangle"]
N_IMAGE, N_TEXT = 24, 8
FEATURE_DIM = 1536
SCORES = ["clipscore", "imagereward", "text_quality"]


@pytest.fixture(scope="module")
def tiny_mllm(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("mllm") / "tiny-llava")


def _conversation(k: int, image: bool) -> list[dict]:
    colour, shape = COLOURS[k % 4], SHAPES[k % 3]
    if not image:
        return [
            {"from": "human", "value": "tell me a story about one red circle ."},
            {"from": "gpt", "value": f"there is one {colour} {shape} in the picture ."},
        ]
    return [
        {"from": "human", "value": "<image>\nwhat colour is the shape ?"},
        {"from": "gpt", "value": colour},
        {"from": "human", "value": f"is it a {shape} ?"},
        {"from": "gpt", "value": "yes" if k % 2 else "no"},
    ]


def make_work(root: Path, seed: int = 0) -> Path:
    """A work folder as prepare/features/cluster leave it (docs/coido_contract.md), N = 36."""
    rng = np.random.default_rng(seed)
    work, images = root / "work", root / "images"
    images.mkdir(parents=True)
    samples = []
    for k in range(N_IMAGE + N_TEXT):
        image = k < N_IMAGE
        path = None
        if image:
            size = (32, 32) if k % 3 else (40, 24)  # some non-square images exercise the padding
            path = images / f"{k}.png"
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
        samples.append(
            {
                "unique_idx": k,
                "id": f"s{k}",
                "dataset": ["colour", "shape"][k % 2] if image else "text",
                "image": f"{k}.png" if image else None,
                "image_path": str(path) if image else None,
                "status": "ok" if image else "text",
                "conversations": _conversation(k, image),
            }
        )
    # four unusable samples that the subset must not contain, and one that sneaked in anyway
    for k in range(4):
        samples.append(
            {
                "unique_idx": len(samples),
                "id": f"m{k}",
                "dataset": "colour",
                "image": "gone.png",
                "image_path": str(images / "gone.png"),
                "status": "missing",
                "conversations": _conversation(k, True),
            }
        )
    n = len(samples)
    (work / "prepare").mkdir(parents=True)
    (work / "prepare/samples.json").write_text(json.dumps(samples))
    (work / "features").mkdir()
    clip = rng.normal(size=(n, FEATURE_DIM)).astype(np.float32)
    np.save(work / "features/clip.npy", clip)
    scaled = {name: rng.uniform(-1, 1, n).tolist() for name in SCORES}
    (work / "features/scores.json").write_text(json.dumps({"names": SCORES, "raw": scaled, "scaled": scaled}))
    (work / "subset").mkdir()
    indices = np.array(list(range(N_IMAGE + N_TEXT)) + [n - 1], dtype=np.int64)
    clusters = rng.integers(-1, 4, len(indices)).astype(np.int64)
    np.save(work / "subset/indices.npy", indices)
    np.save(work / "subset/clusters.npy", clusters)
    return work


def settings(mllm: Path, **kw) -> TrainSettings:
    base = dict(
        mllm=str(mllm),
        batch_size=8,
        lr=1e-3,
        save_steps=2,
        num_workers=0,
        gradient_checkpointing=False,
        warmup_ratio=0.2,
    )
    base.update(kw)
    return TrainSettings(**base)


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _run(work: Path, s: TrainSettings) -> dict:
    out = T.train(work, s)
    ckpt = read_scorer_checkpoint(out)
    return {
        "scorer": ckpt["state_dict"],
        "s1": ckpt["s1"],
        "s2": ckpt["s2"],
        "history": json.loads((work / "train/history.json").read_text()),
        "mllm": _state(work / "train/mllm/model.safetensors") if s.save_mllm else None,
    }


# ------------------------------------------------------------------------------ prompts and batches


def test_vicuna_prompt_labels_only_answers(tiny_mllm):
    from frugalvl.models.llava import load_llava

    llava = load_llava(str(tiny_mllm))
    tok = llava.tokenizer
    ids, labels = P.tokenize_sample(tok, _conversation(0, True), "<image>" * 16, 2048)
    kept = [tok.convert_ids_to_tokens(i) for i in labels if i != -100]
    assert kept == ["red", "</s>", "no", "</s>"]
    assert ids[0] == tok.bos_token_id and ids.count(llava.image_token_id) == 16
    assert all(labels[k] == -100 for k, i in enumerate(ids) if i == llava.image_token_id)
    text = tok.decode(ids)
    assert text.startswith("<s> A chat between") and "USER" in text and "ASSISTANT" in text
    # a text-only sample: no image tokens, and a stray <image> tag is dropped
    ids, _ = P.tokenize_sample(
        tok, [{"from": "human", "value": "<image> tell me"}, {"from": "gpt", "value": "one"}], None, 2048
    )
    assert llava.image_token_id not in ids
    # truncation keeps max_length tokens
    assert len(P.tokenize_sample(tok, _conversation(0, True), "<image>" * 16, 20)[0]) == 20


def test_plan_batches_same_modality_cover_once_and_reproducible():
    lengths = [30] * 20 + [-5] * 7
    plan = B.plan_batches(lengths, batch_size=4, world=1, seed=1, epoch=0, group_by_modality=True)
    micro = [m for mega in plan for m in mega]
    assert sorted(i for m in micro for i in m) == list(range(27))
    assert all(len({lengths[i] > 0 for i in m}) == 1 for m in micro)  # never mixed
    assert plan == B.plan_batches(lengths, 4, 1, 1, 0, True)
    assert plan != B.plan_batches(lengths, 4, 1, 1, 1, True)  # reshuffled each epoch
    two = B.plan_batches(lengths, batch_size=4, world=2, seed=1, epoch=0, group_by_modality=True)
    assert all(len(mega) == 2 and all(mega) for mega in two)
    mixed = B.plan_batches(lengths, 27, 1, 1, 0, group_by_modality=False)
    assert len(mixed) == 1 and len(mixed[0][0]) == 27


def test_optimiser_steps_end_each_accumulation_group_and_epoch():
    plans = [[[[0]]] * 3, [[[0]]] * 2]  # 3 global batches in epoch 0, 2 in epoch 1
    assert T._step_bounds(plans, 2) == [1, 2, 4]
    assert T._step_bounds(plans, 1) == [0, 1, 2, 3, 4]


def test_unreadable_image_is_skipped_from_its_micro_batch(tiny_mllm, tmp_path):
    from frugalvl.models.llava import load_llava

    work = make_work(tmp_path)
    subset = W.read_subset(work)
    Path(subset.samples[1]["image_path"]).write_bytes(b"broken")
    llava = load_llava(str(tiny_mllm))
    s = settings(tiny_mllm)
    data = B.MicroBatches(
        subset,
        [[0, 1, 2, N_IMAGE]],
        llava.tokenizer,
        llava.image_processor,
        16,
        "<image>",
        llava.pad_token_id,
        s.max_length,
        s.image_aspect_ratio,
    )
    batch = data[0]
    assert batch.unique_idx.tolist() == [0, 2, N_IMAGE] and batch.pixel_values.shape == (2, 3, 32, 32)
    assert (batch.input_ids == llava.image_token_id).sum(1).tolist() == [16, 16, 0]
    assert batch.features.shape == (3, FEATURE_DIM + 3) and batch.clusters.shape == (3,)


def test_read_subset_drops_unusable_and_builds_scorer_inputs(tmp_path):
    work = make_work(tmp_path)
    subset = W.read_subset(work)
    assert len(subset.samples) == N_IMAGE + N_TEXT  # the missing-image sample is gone
    assert subset.features.shape == (N_IMAGE + N_TEXT, FEATURE_DIM + 3) and subset.score_names == SCORES
    clip = np.load(work / "features/clip.npy")
    scaled = json.loads((work / "features/scores.json").read_text())["scaled"]
    np.testing.assert_array_equal(subset.features[5], np.r_[clip[5], [scaled[n][5] for n in SCORES]].astype(np.float32))
    image_ok = np.ones(len(clip), bool)
    image_ok[[3, N_IMAGE + 1]] = False  # decode failed in the features stage
    np.save(work / "features/image_ok.npy", image_ok)
    kept = [s["unique_idx"] for s in W.read_subset(work).samples]
    assert 3 not in kept and N_IMAGE + 1 in kept and len(kept) == N_IMAGE + N_TEXT - 1  # text samples stay


def test_missing_stage_outputs_say_which_stage(tmp_path):
    with pytest.raises(UserError, match="select prepare"):
        W.read_subset(tmp_path)
    with pytest.raises(UserError, match=r"\bmllm\b") as err:
        T.train(tmp_path, TrainSettings())
    assert "pass --mllm" in render_error(err.value)


# --------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def plain(tiny_mllm, tmp_path_factory) -> dict:
    """The uninterrupted run that interrupted ones must end as (saving settings do not change it)."""
    return _run(make_work(tmp_path_factory.mktemp("plain")), settings(tiny_mllm, save_mllm=True))


def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny_mllm, tmp_path, monkeypatch, plain):
    s = settings(tiny_mllm, save_mllm=True)
    assert [h["step"] for h in plain["history"]] == [1, 2, 3, 4]
    assert plain["s1"] != 0 and plain["s2"] != 0
    # the lr each step used: one warm-up step from 0, then cosine from 1e-3
    assert [h["lr"] for h in plain["history"]] == pytest.approx([0.0, 1e-3, 7.5e-4, 2.5e-4])
    assert all(np.isfinite(h["loss"]) for h in plain["history"])

    work = make_work(tmp_path / "b")
    real_record = T._record

    def killed_at_step_3(step, *args):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real_record(step, *args)

    monkeypatch.setattr(T, "_record", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        T.train(work, s)
    monkeypatch.setattr(T, "_record", real_record)
    assert [p.name for p in C.checkpoint_dirs(work / "train")] == ["step-2"] and not (work / "train/scorer.pt").exists()
    # full fine-tuning: the frozen vision tower stays out of the checkpoint
    names = C.saved_weight_names(C.checkpoint_dirs(work / "train")[-1])
    assert not any("vision_tower" in n for n in names) and any("language_model" in n for n in names)
    (work / "train/checkpoints/.step-4.tmp").mkdir()  # a save cut short is ignored
    with pytest.raises(UserError, match="lr"):
        T.train(work, replace(s, lr=2e-3))  # other settings: refuse to mix
    resumed = _run(work, s)

    assert resumed["history"] == plain["history"]
    assert resumed["s1"] == plain["s1"] and resumed["s2"] == plain["s2"]
    for key, value in plain["scorer"].items():
        assert torch.equal(resumed["scorer"][key], value), key
    for key, value in plain["mllm"].items():
        assert torch.equal(resumed["mllm"][key], value), key
    scorer = load_scorer(work / "train/scorer.pt")
    assert scorer.feature_dim == FEATURE_DIM and scorer.score_names == SCORES and not scorer.training
    C.clear_training(work / "train")  # --force: start afresh
    assert not (work / "train").exists() and C.checkpoint_dirs(work / "train") == []


def test_uncertainty_lr_moves_only_s1_s2(tiny_mllm, tmp_path):
    # one optimiser step over all 32 samples: the loss is the same in both runs until s moves
    s = settings(tiny_mllm, batch_size=32, group_by_modality=False, warmup_ratio=0.0, save_steps=0, save_mllm=True)
    same = _run(make_work(tmp_path / "a"), s)
    fast = _run(make_work(tmp_path / "b"), replace(s, uncertainty_lr=0.1))
    assert len(same["history"]) == 1
    assert abs(same["s1"]) == pytest.approx(1e-3, rel=1e-3) and abs(fast["s1"]) == pytest.approx(0.1, rel=1e-3)
    assert abs(fast["s2"]) == pytest.approx(0.1, rel=1e-3)
    for part in ("scorer", "mllm"):
        for key, value in same[part].items():
            assert torch.equal(fast[part][key], value), key


def test_importance_variant_leaves_sigma_alone(tiny_mllm, tmp_path):
    out = _run(make_work(tmp_path), settings(tiny_mllm, loss="importance", save_steps=0))
    assert out["s1"] == 0.0 and out["s2"] == 0.0
    assert all(h["loss"] == pytest.approx(h["L_I"]) for h in out["history"])


def test_lora_option_trains_adapter_and_projector_only(tiny_mllm, tmp_path):
    from frugalvl.models.llava import load_llava

    s = settings(tiny_mllm, lora=True, lora_r=4, lora_alpha=8, gradient_checkpointing=True, save_steps=0)
    model = M.prepare_mllm(load_llava(str(tiny_mllm)).model, s)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert any("lora_" in n for n in trainable) and not any("vision_tower" in n for n in trainable)
    out = _run(make_work(tmp_path), s)
    assert len(out["history"]) == 4 and all(np.isfinite(h["loss"]) for h in out["history"])


def test_full_finetune_freezes_vision_tower(tiny_mllm):
    from frugalvl.models.llava import load_llava

    model = M.prepare_mllm(load_llava(str(tiny_mllm)).model, settings(tiny_mllm))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("vision_tower" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable) and any("language_model" in n for n in trainable)


def test_step_cost_reports_both_steps(tiny_mllm, tmp_path):
    from frugalvl.testing.coido_step import step_cost_from_work

    cost = step_cost_from_work(make_work(tmp_path), settings(tiny_mllm), repeats=1)
    assert cost.mllm_step_s > 0 and cost.coupled_step_s > 0 and cost.scorer_losses_s > 0
    assert cost.batch_size == 8


def test_cli_arguments_round_trip():
    import argparse

    from frugalvl.commands.select import _train_options, train_settings

    parser = argparse.ArgumentParser()
    _train_options(parser)
    args = parser.parse_args(
        [
            "--mllm",
            "x",
            "--loss",
            "weighted",
            "--lam",
            "0.3",
            "--uncertainty-lr",
            "1e-3",
            "--lora",
            "--no-gradient-checkpointing",
        ]
    )
    s = train_settings(args)
    assert (s.mllm, s.loss, s.lam, s.uncertainty_lr, s.lora, s.gradient_checkpointing) == (
        "x",
        "weighted",
        0.3,
        1e-3,
        True,
        False,
    )
    assert (s.lr, s.batch_size, s.warmup_ratio, s.max_length, s.epochs, s.weight_decay) == (
        2e-5,
        16,
        0.03,
        2048,
        1,
        0.0,
    )
    assert train_settings(parser.parse_args(["--mllm", "x"])).s_lr == 2e-5


# ------------------------------------------------------------------------------------------ loader


def test_load_llava_errors(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from frugalvl.models import llava as llava_module
    from frugalvl.models.llava import load_llava

    with pytest.raises(UserError, match="does not exist"):
        load_llava(str(tmp_path / "nowhere"))
    LlamaForCausalLM(
        LlamaConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    ).save_pretrained(tmp_path / "llama")
    with pytest.raises(UserError, match="not LLaVA"):
        load_llava(str(tmp_path / "llama"))

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(llava_module, "_load", offline)  # what transformers raises without network
    with pytest.raises(UserError, match="local folder"):
        load_llava("nobody-here/no-such-llava")


def test_paper_initialisation_from_vicuna_projector_and_clip(tiny_mllm, tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from frugalvl.models.llava import load_llava
    from frugalvl.testing.llava import build_tokenizer

    tok = build_tokenizer(["what colour is it ? red"])
    tok.save_pretrained(tmp_path / "vicuna")
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            pad_token_id=tok.pad_token_id,
        )
    )
    lm.save_pretrained(tmp_path / "vicuna")
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=24,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=32,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    proj = {
        "model.mm_projector.0.weight": torch.randn(16, 24),
        "model.mm_projector.0.bias": torch.randn(16),
        "model.mm_projector.2.weight": torch.randn(16, 16),
        "model.mm_projector.2.bias": torch.randn(16),
    }
    torch.save(proj, tmp_path / "mm_projector.bin")

    llava = load_llava(f"lm={tmp_path / 'vicuna'},projector={tmp_path / 'mm_projector.bin'},vision={tmp_path / 'clip'}")
    p = llava.model.model.multi_modal_projector
    assert torch.equal(p.linear_1.weight, proj["model.mm_projector.0.weight"])
    assert torch.equal(p.linear_2.bias, proj["model.mm_projector.2.bias"])
    assert torch.equal(
        llava.model.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight
    )
    assert llava.image_seq_length == 16 and llava.tokenizer.convert_ids_to_tokens(llava.image_token_id) == "<image>"
    assert llava.model.get_input_embeddings().weight.shape[0] >= len(llava.tokenizer)
    ids = torch.tensor([[llava.tokenizer.bos_token_id] + [llava.image_token_id] * 16 + [5, 6]])
    out = llava.model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32))
    assert out.logits.shape[:2] == (1, 19)
    torch.save({"model.mm_projector.0.weight": torch.randn(3, 3)}, tmp_path / "other.bin")
    with pytest.raises(UserError, match="mm_projector"):
        load_llava(f"lm={tmp_path / 'vicuna'},projector={tmp_path / 'other.bin'},vision={tmp_path / 'clip'}")


# ------------------------------------------------------------------------------------ checkpoints


def test_ctrl_c_saves_the_last_step_and_the_rerun_ends_as_uninterrupted(tiny_mllm, tmp_path, monkeypatch, plain):
    import os
    import signal

    s = settings(tiny_mllm, save_steps=0, save_minutes=0, save_mllm=True)  # no periodic saving at all
    work = make_work(tmp_path / "b")
    real_record = T._record

    def ctrl_c_at_step_3(step, *args):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it
        return real_record(step, *args)

    monkeypatch.setattr(T, "_record", ctrl_c_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        T.train(work, s)
    monkeypatch.setattr(T, "_record", real_record)
    assert [p.name for p in C.checkpoint_dirs(work / "train")] == ["step-3"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored
    resumed = _run(work, s)
    assert resumed["history"] == plain["history"]
    for part in ("scorer", "mllm"):
        for key, value in plain[part].items():
            assert torch.equal(resumed[part][key], value), key


def test_lora_checkpoints_hold_adapter_projector_scorer_only_and_are_time_based(tiny_mllm, tmp_path):
    from frugalvl.models.llava import load_llava

    s = settings(tiny_mllm, lora=True, lora_r=4, lora_alpha=8, save_steps=0, save_minutes=1e-9, keep_checkpoints=0)
    work = make_work(tmp_path)
    T.train(work, s)
    found = C.checkpoint_dirs(work / "train")
    assert [p.name for p in found] == ["step-1", "step-2", "step-3"]  # a save each time the (tiny) period passed
    names = C.saved_weight_names(found[-1])
    assert names and all(
        ("lora_" in n or "modules_to_save" in n or n.startswith("scorer.") or n in ("s1", "s2")) for n in names
    ), sorted(names)
    assert any("lora_" in n for n in names) and any("multi_modal_projector" in n for n in names)
    assert any(n.startswith("scorer.") for n in names) and {"s1", "s2"} <= names
    base_bytes = sum(v.numel() * v.element_size() for v in load_llava(str(tiny_mllm)).model.state_dict().values())
    from safetensors import safe_open

    saved_bytes = 0
    for path in found[-1].glob("model*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            saved_bytes += sum(
                f.get_tensor(n).numel() * f.get_tensor(n).element_size() for n in f.keys() if n.startswith("mllm.")
            )
    assert 0 < saved_bytes < base_bytes / 3  # the MLLM part: far from the full model
