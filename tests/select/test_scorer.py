"""The scorer network (docs/methods/coido.md#scorer-network) and its checkpoint file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from frugalvl.errors import UserError
from frugalvl.select.scorer import Scorer, check_score_names, load_scorer, save_scorer

NAMES = ["clipscore", "imagereward", "text_quality"]


def test_head_architecture_and_size():
    scorer = Scorer(1536, NAMES)
    # ≈3.82M parameters on the used path of the HEAD network (#scorer-network)
    assert sum(p.numel() for p in scorer.parameters()) == 3_817_729
    linears = [m for m in scorer.clip_projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1536, 768), (768, 512), (512, 384)]
    linears = [m for m in scorer.scores_projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 128), (128, 256), (256, 384)]
    assert isinstance(scorer.fusion_network[-1], nn.LayerNorm) and isinstance(scorer.feature_enhancer[-1], nn.LayerNorm)
    drops = [m.p for m in scorer.classifier if isinstance(m, nn.Dropout)]
    assert drops == [0.2, 0.1]


def test_forward_gives_one_raw_score_per_sample():
    scorer = Scorer(64, NAMES).eval()
    x = torch.randn(5, 67)
    r = scorer(x)
    assert r.shape == (5,)
    torch.testing.assert_close(scorer(x[:2]), r[:2])  # eval: no batch coupling, no dropout
    with pytest.raises(ValueError):
        scorer(torch.randn(5, 66))


def test_no_scores_means_no_score_branch():
    scorer = Scorer(64, [])
    assert scorer.scores_projector is None and scorer.fusion_network[0].in_features == 384
    assert scorer(torch.randn(3, 64)).shape == (3,)


def test_residual_enhancer():
    scorer = Scorer(16, ["clipscore"]).eval()
    for layer in scorer.feature_enhancer:  # enhancer output 0: h = f + 0
        if isinstance(layer, nn.LayerNorm):
            nn.init.zeros_(layer.weight)
    x = torch.randn(4, 17)
    f = scorer.fusion_network(torch.cat([scorer.clip_projector(x[:, :16]), scorer.scores_projector(x[:, 16:])], 1))
    torch.testing.assert_close(scorer(x), scorer.classifier(f).squeeze(-1))


def test_save_and_load_round_trip(tmp_path):
    scorer = Scorer(32, NAMES[:2])
    save_scorer(tmp_path / "scorer.pt", scorer, {"s1": 0.1, "s2": -0.2, "settings": {"lr": 2e-5}})
    loaded = load_scorer(tmp_path / "scorer.pt")
    assert loaded.feature_dim == 32 and loaded.score_names == NAMES[:2] and not loaded.training
    x = torch.randn(3, 34)
    torch.testing.assert_close(loaded(x), scorer.eval()(x))
    check_score_names(loaded, NAMES[:2])
    with pytest.raises(UserError, match="trained with scores"):
        check_score_names(loaded, NAMES)
    with pytest.raises(UserError, match="trained with scores"):
        check_score_names(loaded, NAMES[:2][::-1])  # order matters


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_scorer(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_scorer(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a CoIDO scorer"):
        load_scorer(tmp_path / "other.pt")
