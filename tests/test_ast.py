"""AST: positional embeddings for any length, official-layout and transformers conversions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dass.errors import CheckpointError, ConfigError
from dass.models.ast import (
    AST,
    ASTConfig,
    adapt_learned_pos_embed,
    config_and_state_from_official,
    from_hf_ast,
    sincos_pos_embed_2d,
)

torch.set_num_threads(1)


def tiny(**kw) -> AST:
    torch.manual_seed(0)
    cfg = dict(embed_dim=32, depth=2, num_heads=2, num_classes=7, input_tdim=100)
    cfg.update(kw)
    return AST(ASTConfig(**cfg)).eval()


def test_learned_pos_embed_any_length_shapes() -> None:
    model = tiny()
    assert model.pos_embed.shape == (1, 12 * 9 + 2, 32)  # 12 freq × 9 time patches for 100 frames
    for frames in (100, 10, 16, 60, 250):
        x = torch.randn(2, frames, 128)
        assert model(x).shape == (2, 7)
        _, t = model.patch_grid(max(frames, 16))
        assert model.position_embeddings(t).shape == (1, 2 + 12 * t, 32)


def test_learned_pos_embed_cut_is_centre_and_interpolation_is_linear_in_time() -> None:
    g = torch.Generator().manual_seed(1)
    fdim, tdim, dim = 3, 9, 5
    pos = torch.randn(1, fdim * tdim, dim, generator=g, dtype=torch.float64)
    grid = pos.reshape(fdim, tdim, dim)
    cut = adapt_learned_pos_embed(pos, fdim, tdim, 4).reshape(fdim, 4, dim)
    start = tdim // 2 - 4 // 2
    torch.testing.assert_close(cut, grid[:, start : start + 4])
    # bilinear (align_corners=False) with unchanged height == 1-D linear interpolation along time
    new_t = 23
    got = adapt_learned_pos_embed(pos, fdim, tdim, new_t).reshape(fdim, new_t, dim).numpy()
    src = np.clip((np.arange(new_t) + 0.5) * tdim / new_t - 0.5, 0, tdim - 1)
    want = np.stack(
        [[np.interp(src, np.arange(tdim), grid[f, :, c].numpy()) for c in range(dim)] for f in range(fdim)]
    ).transpose(0, 2, 1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert adapt_learned_pos_embed(pos, fdim, tdim, tdim) is pos


def test_sinusoidal_values_and_any_length() -> None:
    model = tiny(pos_emb="sinusoidal")
    assert model.pos_embed is None
    for frames in (16, 100, 1000, 3001):
        assert model(torch.randn(1, frames, 128)).shape == (1, 7)
    dim, fdim, tdim = 8, 3, 5
    table = sincos_pos_embed_2d(dim, fdim, tdim)
    f, t = 2, 4
    row = table[f * tdim + t]
    expected = []
    for pos in (f, t):
        w = [1.0 / 10000 ** (i / 2) for i in range(2)]  # dim/2 = 4 channels per axis, 2 frequencies
        expected += [math.sin(pos * w[0]), math.sin(pos * w[1]), math.cos(pos * w[0]), math.cos(pos * w[1])]
    torch.testing.assert_close(row, torch.tensor(expected, dtype=torch.float32))
    # a longer grid extends the shorter one: the first time positions coincide
    longer = sincos_pos_embed_2d(dim, fdim, 50).reshape(fdim, 50, dim)
    torch.testing.assert_close(longer[:, :tdim], table.reshape(fdim, tdim, dim))


def test_attention_matches_float64_reference() -> None:
    model = tiny().double()
    attn = model.blocks[0].attn
    x = torch.randn(3, 11, 32, dtype=torch.float64, requires_grad=True)
    y = attn(x)
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = (qkv[..., i * 32 : (i + 1) * 32].reshape(3, 11, 2, 16).transpose(1, 2) for i in range(3))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), dim=-1)
    ref = (w @ v).transpose(1, 2).reshape(3, 11, 32) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(y, ref)
    (g1,) = torch.autograd.grad(y.square().sum(), x)
    (g2,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g1, g2)


def test_official_layout_round_trip() -> None:
    model = tiny(embed_dim=64, num_heads=1, input_tdim=1024, num_classes=5)
    official = {("module.mlp_head." + k[9:]) if k.startswith("mlp_head.") else "module.v." + k: v
                for k, v in model.state_dict().items()}
    official["module.v.head.weight"] = torch.zeros(1000, 64)  # timm's unused ImageNet head
    assert official["module.v.pos_embed"].shape == (1, 1214, 64)
    config, state = config_and_state_from_official(official)
    assert (config["embed_dim"], config["depth"], config["num_heads"], config["input_tdim"], config["num_classes"]) == (
        64, 2, 1, 1024, 5)
    rebuilt = AST(ASTConfig.from_dict(config)).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(2, 1024, 128)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="unexpected key 'module.extra'"):
        config_and_state_from_official({**official, "module.extra": torch.zeros(1)})


def test_config_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown AST config key\(s\) \['depht'\]"):
        ASTConfig.from_dict({"depht": 3})
    with pytest.raises(ConfigError, match="pos_emb must be 'learned' or 'sinusoidal'"):
        ASTConfig(pos_emb="rope")
    with pytest.raises(ConfigError, match=r"expects features of shape \(batch, time, 128\)"):
        tiny()(torch.randn(1, 100, 64))


def test_transformers_ast_equivalence(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    hf_cfg = transformers.ASTConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
        max_length=64, num_mel_bins=128, num_labels=4, id2label={i: f"c{i}" for i in range(4)},
        label2id={f"c{i}": i for i in range(4)},
    )
    hf = transformers.ASTForAudioClassification(hf_cfg).eval()
    with torch.no_grad():  # non-trivial tokens/biases so a mis-mapping shows
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf_ast")
    ours = from_hf_ast(tmp_path / "hf_ast")
    assert ours.config.labels == ["c0", "c1", "c2", "c3"]
    assert ours.config.layer_norm_eps == hf_cfg.layer_norm_eps
    x = torch.randn(3, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(input_values=x).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="not a folder"):
        from_hf_ast(tmp_path / "missing")


def test_transformers_v4_key_names_map_like_v5() -> None:
    from dass.models.ast import _hf_name_map

    transformers = pytest.importorskip("transformers")
    hf = transformers.ASTForAudioClassification(transformers.ASTConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, max_length=32, num_labels=3))
    v5 = hf.state_dict()
    assert "audio_spectrogram_transformer.layers.0.attention.q_proj.weight" in v5
    renames = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
               "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
               "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    v4 = {}
    for key, value in v5.items():
        key = key.replace("audio_spectrogram_transformer.layers.", "audio_spectrogram_transformer.encoder.layer.")
        for new, old in renames.items():
            key = key.replace(f".{new}.", f".{old}.")
        v4[key] = value
    ours_v5, ours_v4 = _hf_name_map(v5, 2), _hf_name_map(v4, 2)
    assert ours_v5.keys() == ours_v4.keys() == AST(ASTConfig(embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
                                                             input_tdim=32, num_classes=3)).state_dict().keys()
    for k in ours_v5:
        assert torch.equal(ours_v5[k], ours_v4[k])


# ------------------------------------------------------------------------------------- SSAST additions


def test_eager_attention_equals_sdpa_forward_and_backward() -> None:
    sdpa = tiny(embed_dim=48, num_heads=3)
    eager = AST(ASTConfig(**{**sdpa.config.to_dict(), "attention": "eager"})).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert all(block.attn.implementation == "eager" for block in eager.blocks)
    x = torch.randn(2, 100, 128, requires_grad=True)
    y_sdpa, y_eager = sdpa(x), eager(x)
    torch.testing.assert_close(y_eager, y_sdpa, rtol=1e-5, atol=1e-6)
    (g_sdpa,) = torch.autograd.grad(y_sdpa.square().sum(), x)
    (g_eager,) = torch.autograd.grad(y_eager.square().sum(), x)
    torch.testing.assert_close(g_eager, g_sdpa, rtol=1e-4, atol=1e-6)
    qkv_sdpa = torch.autograd.grad(sdpa(x).sum(), sdpa.blocks[0].attn.qkv.weight)[0]
    qkv_eager = torch.autograd.grad(eager(x).sum(), eager.blocks[0].attn.qkv.weight)[0]
    torch.testing.assert_close(qkv_eager, qkv_sdpa, rtol=1e-4, atol=1e-6)


def test_mean_pooling_is_the_mean_of_the_patch_tokens() -> None:
    model = tiny(pooling="mean")
    x = torch.randn(2, 100, 128)
    seen = {}
    model.norm.register_forward_hook(lambda mod, args, out: seen.update(tokens=out))
    with torch.no_grad():
        pooled = model.forward_features(x)
        logits = model(x)
    tokens = seen["tokens"]  # (B, 2 + 12*9, D): cls, dist, patches
    assert tokens.shape == (2, 2 + 12 * 9, 32)
    torch.testing.assert_close(pooled, tokens[:, 2:].sum(1) / (12 * 9))
    torch.testing.assert_close(logits, model.mlp_head(pooled))
    cls = tiny(pooling="cls")  # same weights (same seed): the mean of the two tokens
    with torch.no_grad():
        torch.testing.assert_close(cls.forward_features(x), (tokens[:, 0] + tokens[:, 1]) / 2)


@pytest.mark.parametrize("name, dim, heads", [("ssast_tiny", 192, 3), ("ssast_small", 384, 6), ("ssast_base", 768, 12)])
def test_ssast_sizes(name: str, dim: int, heads: int) -> None:
    import dass

    with torch.device("meta"):
        model = dass.create_model(name, num_classes=35, fstride=16, tstride=16, input_tdim=1024)
    c = model.config
    assert (c.embed_dim, c.depth, c.num_heads, c.pooling, c.attention) == (dim, 12, heads, "mean", "sdpa")
    per_block = 12 * dim * dim + 13 * dim  # qkv, proj, fc1, fc2 (+ biases), two LayerNorms
    encoder = 12 * per_block + (256 * dim + dim) + 2 * dim + 2 * dim  # + patch conv, cls/dist, final norm
    count = sum(p.numel() for k, p in model.named_parameters() if not k.startswith(("pos_embed", "mlp_head.")))
    assert count == encoder
    assert model.pos_embed.shape == (1, 2 + 8 * 64, dim)  # stride 16: 8 x 64 patches, as SSAST pretrains
    if name == "ssast_tiny":
        assert round(encoder / 1e6, 2) == 5.39


def test_pooling_and_attention_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="pooling must be one of cls, mean, got 'max'"):
        ASTConfig(pooling="max")
    with pytest.raises(ConfigError, match="attention must be one of sdpa, eager, got 'flash'"):
        ASTConfig(attention="flash")
    assert ASTConfig.from_dict(ASTConfig(pooling="mean", attention="eager").to_dict()).attention == "eager"
