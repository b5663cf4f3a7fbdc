import pytest
import torch

from frugalvl.errors import UserError
from frugalvl.models.clip import load_clip
from frugalvl.testing.clip import tiny_clip, write_tiny_torchscript_clip


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_openai_state_dict_architecture_inferred(tiny_clip_file):
    clip = load_clip(str(tiny_clip_file))
    assert clip.embed_dim == 32 and clip.patch_size == 16
    assert clip.dtype == torch.float32 and not clip.model.training
    assert _same_weights(clip.model, tiny_clip())
    text = clip.encode_text(["a photo of a road.", "water"])
    assert text.shape == (2, 32) and torch.allclose(text.norm(dim=-1), torch.ones(2))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_archive(tmp_path):
    path = write_tiny_torchscript_clip(tmp_path / "ViT-tiny.pt")
    assert _same_weights(load_clip(str(path)).model, tiny_clip())


def test_arch_and_file_for_open_clip_state_dicts(tmp_path):
    import open_clip

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "remote.pt")
    clip = load_clip(f"ViT-B-32:{tmp_path / 'remote.pt'}")
    assert clip.embed_dim == 512 and clip.patch_size == 32
    with pytest.raises(UserError, match="does not fit architecture"):
        load_clip(f"ViT-B-16:{tmp_path / 'remote.pt'}")


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_clip(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_clip(str(junk))
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(UserError, match="not a CLIP checkpoint"):
        load_clip(str(other))


def test_unknown_name_and_offline_hub(monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(UserError, match="unknown CLIP"):
        load_clip("ViT-Q-99")
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: patch the value it uses (else 5 retries, ~23 s)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="no network"):
        load_clip("hf-hub:someone/some-clip")


def _sam3_like_folder(folder):
    """What a user might pass by mistake: a Hugging Face SAM 3 folder (config + safetensors weights)."""
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "sam3"}')
    save_file(
        {
            "detector_model.vision_encoder.backbone.embeddings.patch_embeddings.projection.weight": torch.zeros(
                4, 3, 2, 2
            ),
            "detector_model.text_encoder.text_model.embeddings.token_embedding.weight": torch.zeros(8, 4),
        },
        str(folder / "model.safetensors"),
    )
    return folder


def test_non_clip_folders_and_files_are_one_line(tmp_path):
    sam3 = _sam3_like_folder(tmp_path / "sam3")
    image = tmp_path / "photo.pt"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    cases = [
        str(sam3),
        f"local-dir:{sam3}",
        str(sam3 / "model.safetensors"),
        str(image),
        f"ViT-B-32:{sam3 / 'model.safetensors'}",
    ]
    for spec in cases:
        with pytest.raises(UserError, match="is not a CLIP checkpoint") as info:
            load_clip(spec)
        assert "\n" not in str(info.value), spec


def test_safetensors_open_clip_state_dicts_load(tmp_path):
    """Read through open_clip's own loader, so its formats come for free (here: safetensors)."""
    from safetensors.torch import save_file

    model = tiny_clip()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "tiny.safetensors"))
    assert _same_weights(load_clip(str(tmp_path / "tiny.safetensors")).model, model)
