"""SSAMBA: sizes, key layout, the mixer's fast vs reference path, an independent network, the position
table rule, the authors' checkpoint layouts (both ways) and their errors, the CUDA dispatch."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dass
from dass.checkpoints import load_state_dict_file, load_weights
from dass.errors import AudioError, CheckpointError, ConfigError
from dass.models import ssamba as ssamba_module
from dass.models.ssamba import (
    SSAMBA,
    BiMambaMixer,
    SSAMBAConfig,
    adapt_position_table,
    authors_key,
    authors_layout,
    config_and_state_from_authors,
    is_authors_state_dict,
    reference_ops,
    state_dict_to_authors,
)

torch.set_num_threads(1)

SMALL = {"embed_dim": 32, "depth": 4, "num_classes": 5, "input_tdim": 128}  # D = 32: E = 64, R = 2, N = 16


def small(**overrides) -> SSAMBA:
    torch.manual_seed(0)
    model = SSAMBA(SSAMBAConfig(**{**SMALL, **overrides})).eval()
    with torch.no_grad():  # non-trivial biases, D and norms so that a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if name.endswith(("bias", ".D", ".D_b")) or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# ------------------------------------------------------------------------------------ sizes, layout


def per_layer(d: int, norm_params: int) -> int:
    r = math.ceil(d / 16)
    return 6 * d * d + 4 * d * (2 * r + 55) + norm_params * d


@pytest.mark.parametrize("name, d, encoder", [("ssamba_tiny", 192, 6_823_680), ("ssamba_small", 384, 25_148_928),
                                              ("ssamba_base", 768, 96_304_128), ("ssamba_nano", 96, 674_688)])
def test_parameter_counts(name: str, d: int, encoder: int) -> None:
    with torch.device("meta"):
        model = dass.create_model(name, num_classes=527)
        rms = dass.create_model(name, norm="rms")
    depth = model.config.depth

    def count(m, skip=("pos_embed", "mlp_head.")):
        return sum(p.numel() for k, p in m.named_parameters() if not k.startswith(skip))

    assert count(model) == depth * per_layer(d, 2) + 260 * d == encoder
    assert count(rms) == depth * per_layer(d, 1) + 259 * d  # RMSNorm: no biases (blocks and norm_f)
    assert model.pos_embed.shape == (1, 1 + 12 * 101, d)  # AudioSet fine-tuning: 1024 frames, stride 10
    assert sum(p.numel() for p in model.mlp_head.parameters()) == 2 * d + 527 * d + 527
    if name == "ssamba_tiny":  # the encoder sizes of the paper's table, and the Speech Commands model
        assert round(encoder / 1e6, 3) == 6.824
        with torch.device("meta"):
            sc = dass.create_model(name, num_classes=35, input_tdim=128)
        assert count(sc, skip=("mlp_head.",)) == 6_851_520  # incl. the 145-token table
        assert count(sc, skip=()) + 193_000 == 7_051_659  # + the authors' unused v.head: 7.052 M


def authors_shapes(d: int, depth: int, classes: int, tokens: int, n: int = 16) -> list[tuple[str, tuple]]:
    """The authors' fine-tuned keys and shapes in their order, without ``module.v.`` and without v.head."""
    e, r = 2 * d, math.ceil(d / 16)
    keys = [("cls_token", (1, 1, d)), ("pos_embed", (1, tokens, d)),
            ("patch_embed.proj.weight", (d, 1, 16, 16)), ("patch_embed.proj.bias", (d,))]
    for i in range(depth):
        p = f"layers.{i}."
        keys += [(p + "mixer.A_log", (e, n)), (p + "mixer.D", (e,)), (p + "mixer.A_b_log", (e, n)),
                 (p + "mixer.D_b", (e,)), (p + "mixer.in_proj.weight", (2 * e, d)),
                 (p + "mixer.conv1d.weight", (e, 1, 4)), (p + "mixer.conv1d.bias", (e,)),
                 (p + "mixer.x_proj.weight", (r + 2 * n, e)), (p + "mixer.dt_proj.weight", (e, r)),
                 (p + "mixer.dt_proj.bias", (e,)), (p + "mixer.conv1d_b.weight", (e, 1, 4)),
                 (p + "mixer.conv1d_b.bias", (e,)), (p + "mixer.x_proj_b.weight", (r + 2 * n, e)),
                 (p + "mixer.dt_proj_b.weight", (e, r)), (p + "mixer.dt_proj_b.bias", (e,)),
                 (p + "mixer.out_proj.weight", (d, e)), (p + "norm.weight", (d,)), (p + "norm.bias", (d,))]
    keys += [("norm_f.weight", (d,)), ("norm_f.bias", (d,)), ("mlp_head.0.weight", (d,)), ("mlp_head.0.bias", (d,)),
             ("mlp_head.1.weight", (classes, d)), ("mlp_head.1.bias", (classes,))]
    return keys


def test_state_dict_is_the_authors_layout_in_their_order() -> None:
    with torch.device("meta"):
        model = dass.create_model("ssamba_tiny", num_classes=50, input_tdim=512)  # ESC-50: 601 tokens
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == authors_shapes(192, 24, 50, 601)


def test_config_round_trip_and_errors() -> None:
    config = SSAMBAConfig(embed_dim=64, depth=6, pooling="cls", norm="rms", labels=["a", "b"], num_classes=2)
    assert SSAMBAConfig.from_dict(config.to_dict()) == config
    assert dass.models.build_from_config(config.to_dict()).config == config
    with pytest.raises(ConfigError, match="unknown config key.*'depht'"):
        SSAMBAConfig.from_dict({"depht": 4})
    with pytest.raises(ConfigError, match="even depth, got 5"):
        SSAMBAConfig(depth=5)
    assert SSAMBAConfig(depth=5, bidirectional_pairs=False).depth == 5  # the clean variant chains blocks
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        SSAMBAConfig(pooling="max")
    with pytest.raises(ConfigError, match="unknown norm 'batch'"):
        SSAMBAConfig(norm="batch")
    with pytest.raises(ConfigError, match="3 labels given for num_classes=2"):
        SSAMBAConfig(num_classes=2, labels=["a", "b", "c"])
    with pytest.raises(AudioError, match=r"expects features of shape \(batch, time, 128\), got \(1, 100, 64\)"):
        small()(torch.randn(1, 100, 64))


def test_init_follows_the_released_code() -> None:
    torch.manual_seed(1)
    model = dass.create_model("ssamba_nano")
    for layer in model.layers:
        mixer = layer.mixer
        e, r = mixer.d_inner, mixer.dt_rank
        for a_log in (mixer.A_log, mixer.A_b_log):
            torch.testing.assert_close(a_log.detach(), torch.log(torch.arange(1, 17.0)).expand(e, 16))
        assert torch.equal(mixer.D.detach(), torch.ones(e)) and torch.equal(mixer.D_b.detach(), torch.ones(e))
        dt = F.softplus(mixer.dt_proj.bias.detach())
        assert dt.min() >= 1e-4 * 0.999 and dt.max() <= 0.1 * 1.001 and dt.std() > 0
        assert torch.equal(mixer.dt_proj_b.bias.detach(), torch.zeros(e))  # the quirk: not the dt init
        for w in (mixer.dt_proj.weight, mixer.dt_proj_b.weight):
            assert w.abs().max() <= r**-0.5
        bound = 1 / math.sqrt(e) / math.sqrt(model.config.depth)  # kaiming_uniform(a=sqrt 5) / sqrt(depth)
        assert mixer.out_proj.weight.abs().max() <= bound and mixer.out_proj.weight.abs().max() > 0.9 * bound
    for t in (model.cls_token, model.pos_embed):
        assert abs(t.std().item() - 0.02) < 0.004 and t.abs().max() <= 2.0


# ------------------------------------------------------------------------------------------ the mixer


@pytest.mark.parametrize("length", [1, 5, 67])
def test_mixer_fast_path_matches_reference_forward_and_gradients(length: int) -> None:
    torch.manual_seed(length)
    mixer = BiMambaMixer(40, d_state=16)  # E = 80, R = 3
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    u = torch.randn(2, length, 40, requires_grad=True)
    params = [u] + list(mixer.parameters())

    out = mixer(u)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), params)
    with reference_ops():
        ref = mixer(u)
        ref_grads = torch.autograd.grad((ref * torch.linspace(-1, 1, ref.numel()).view_as(ref)).sum(), params)
    assert out.shape == (2, length, 40)
    assert rel_err(out, ref) <= 1e-5
    for (name, _), g, g_ref in zip([("u", None)] + list(mixer.named_parameters()), grads, ref_grads):
        assert rel_err(g, g_ref) <= 1e-4, name


def bimamba_v2_float64(u: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mixer of docs/ssamba.md written out step by step in float64 (no dass code)."""
    u = u.double()
    p = {k: v.double() for k, v in p.items()}
    e = p["D"].shape[0]
    n, r = p["A_log"].shape[1], p["dt_proj.weight"].shape[1]
    xz = torch.einsum("cd,bld->bcl", p["in_proj.weight"], u)
    x, z = xz[:, :e], xz[:, e:]

    def direction(x, z, sfx):
        length, width = x.shape[-1], p[f"conv1d{sfx}.weight"].shape[-1]
        padded = F.pad(x, (width - 1, 0))
        xc = sum(p[f"conv1d{sfx}.weight"][:, 0, k, None] * padded[:, :, k:k + length] for k in range(width))
        xc = xc + p[f"conv1d{sfx}.bias"][:, None]
        xc = xc * torch.sigmoid(xc)
        dbl = torch.einsum("ce,bel->bcl", p[f"x_proj{sfx}.weight"], xc)
        dt, b_t, c_t = dbl[:, :r], dbl[:, r:r + n], dbl[:, r + n:]
        delta = F.softplus(torch.einsum("er,brl->bel", p[f"dt_proj{sfx}.weight"], dt) + p[f"dt_proj{sfx}.bias"][:, None])
        a = -torch.exp(p["A_log" if not sfx else "A_b_log"])
        d = p["D" + sfx]
        h = torch.zeros(x.shape[0], e, n, dtype=torch.float64)
        ys = []
        for t in range(length):
            h = torch.exp(delta[:, :, t, None] * a) * h + (delta[:, :, t] * xc[:, :, t])[:, :, None] * b_t[:, None, :, t]
            ys.append((h * c_t[:, None, :, t]).sum(-1) + d * xc[:, :, t])
        return torch.stack(ys, -1) * z * torch.sigmoid(z)

    o = (direction(x, z, "") + direction(x.flip(-1), z.flip(-1), "_b").flip(-1)) / 2
    return torch.einsum("de,bel->bld", p["out_proj.weight"], o)


def test_mixer_reference_equals_the_equations() -> None:
    torch.manual_seed(2)
    mixer = BiMambaMixer(24, d_state=16).double()
    with torch.no_grad():
        for prm in mixer.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
    u = torch.randn(2, 13, 24, dtype=torch.float64)
    with reference_ops():
        torch.testing.assert_close(mixer(u), bimamba_v2_float64(u, dict(mixer.state_dict())), rtol=1e-10, atol=1e-12)


def test_cuda_dispatch_uses_mamba_ssm_kernels_when_installed(monkeypatch) -> None:
    from dass.ops import selective_scan_ref

    calls = {"conv": 0, "scan": 0}

    def causal_conv1d_fn(x, weight, bias=None, activation=None):  # the causal_conv1d package's API
        calls["conv"] += 1
        assert weight.dim() == 2 and activation == "silu"
        y = F.conv1d(x, weight[:, None], bias, padding=weight.shape[-1] - 1, groups=x.shape[1])[..., : x.shape[-1]]
        return F.silu(y)

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):  # mamba_ssm.ops.selective_scan_interface's API
        calls["scan"] += 1
        assert B.is_contiguous() and C.is_contiguous() and z is not None
        return selective_scan_ref(u, delta, A, B, C, D, delta_bias, delta_softplus) * F.silu(z)

    conv_module = types.ModuleType("causal_conv1d")
    conv_module.causal_conv1d_fn = causal_conv1d_fn
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = selective_scan_fn
    for name, module in [("causal_conv1d", conv_module), ("mamba_ssm", types.ModuleType("mamba_ssm")),
                         ("mamba_ssm.ops", types.ModuleType("mamba_ssm.ops")),
                         ("mamba_ssm.ops.selective_scan_interface", interface)]:
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules["mamba_ssm"].ops = sys.modules["mamba_ssm.ops"]
    sys.modules["mamba_ssm.ops"].selective_scan_interface = interface

    torch.manual_seed(3)
    mixer = BiMambaMixer(24)
    u = torch.randn(2, 11, 24)
    with reference_ops():
        want = mixer(u)
    monkeypatch.setattr(ssamba_module, "_on_cuda", lambda t: True)  # no GPU here: pretend u is on one
    assert ssamba_module._cuda_kernels() is not None
    torch.testing.assert_close(mixer(u), want, rtol=1e-5, atol=1e-6)
    assert calls == {"conv": 1, "scan": 1}
    # without the packages (or with a broken CUDA extension) the torch path runs
    monkeypatch.setitem(sys.modules, "causal_conv1d", None)
    assert ssamba_module._cuda_kernels() is None
    torch.testing.assert_close(mixer(u), want, rtol=1e-5, atol=1e-6)
    assert calls == {"conv": 1, "scan": 1}


# ------------------------------------------------------------------------------------- the network


def authors_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, *, strides=(16, 16), pairs=True,
                    pooling="mean", rms=False, eps=1e-5) -> torch.Tensor:
    """The released AMBAModel forward (eval mode) on the authors' state dict, in float64, from the description
    in docs/ssamba.md: paired blocks with summed residuals, norm_f twice, frequency-major tokens."""
    v = {k[len("module.v."):]: t.double() for k, t in sd.items() if k.startswith("module.v.")}
    depth = 1 + max(int(k.split(".")[1]) for k in v if k.startswith("layers."))

    def norm(t, prefix):
        if rms:
            return t * torch.rsqrt(t.square().mean(-1, keepdim=True) + eps) * v[prefix + ".weight"]
        return F.layer_norm(t, t.shape[-1:], v[prefix + ".weight"], v[prefix + ".bias"], eps)

    def block(i, h, r):
        r = h if r is None else r + h
        mixer = {k[len(f"layers.{i}.mixer."):]: t for k, t in v.items() if k.startswith(f"layers.{i}.mixer.")}
        return bimamba_v2_float64(norm(r, f"layers.{i}.norm"), mixer), r

    image = x.double().unsqueeze(1).transpose(2, 3)  # (B, 1, F, T)
    tokens = F.conv2d(image, v["patch_embed.proj.weight"], v["patch_embed.proj.bias"], stride=strides)
    tokens = tokens.flatten(2).transpose(1, 2)  # frequency-major
    h = torch.cat([v["cls_token"].expand(x.shape[0], -1, -1), tokens], 1) + v["pos_embed"]
    r = None
    if pairs:
        for i in range(depth // 2):
            h_f, r_f = block(2 * i, h, r)
            h_b, r_b = block(2 * i + 1, h.flip(1), None if r is None else r.flip(1))
            h, r = h_f + h_b.flip(1), r_f + r_b.flip(1)
    else:
        for i in range(depth):
            h, r = block(i, h, r)
    y = norm(norm(r + h, "norm_f"), "norm_f")
    pooled = y[:, 1:].mean(1) if pooling == "mean" else y[:, 0]
    head = {k: t.double() for k, t in sd.items() if k.startswith("module.mlp_head.")}
    pooled = F.layer_norm(pooled, pooled.shape[-1:], head["module.mlp_head.0.weight"], head["module.mlp_head.0.bias"])
    return pooled @ head["module.mlp_head.1.weight"].T + head["module.mlp_head.1.bias"]


def to_authors_finetuned(model: SSAMBA) -> dict[str, torch.Tensor]:
    """Rename our keys to the authors' fine-tuned layout (module.v.*, module.mlp_head.*, + the unused v.head)."""
    sd = {}
    for key, value in model.state_dict().items():
        sd[("module." if key.startswith("mlp_head.") else "module.v.") + key] = value.clone()
        if key == "patch_embed.proj.bias":  # their order: cls, pos, patch_embed, head, layers, norm_f
            sd["module.v.head.weight"] = torch.randn(1000, model.config.embed_dim)
            sd["module.v.head.bias"] = torch.randn(1000)
    return sd


@pytest.mark.parametrize("variant", [
    {}, {"pooling": "cls"}, {"norm": "rms"}, {"bidirectional_pairs": False, "depth": 3},
    {"fstride": 10, "tstride": 10, "input_tdim": 60},
])
def test_network_matches_an_independent_authors_forward(variant) -> None:
    model = small(**{"fstride": 16, "tstride": 16, **variant})
    c = model.config
    x = torch.randn(2, c.input_tdim, 128)
    want = authors_forward(to_authors_finetuned(model), x, strides=(c.fstride, c.tstride), pairs=c.bidirectional_pairs,
                           pooling=c.pooling, rms=c.norm == "rms")
    with torch.no_grad():
        fast = model(x)
        with reference_ops():
            ref = model(x)
        with reference_ops():
            ref64 = model.double()(x.double())
    assert rel_err(ref64, want) <= 1e-10
    assert rel_err(ref, want) <= 1e-5
    assert rel_err(fast, want) <= 1e-5


def test_residual_stream_doubles_at_every_pair() -> None:
    model = small(depth=6)
    seen = []
    for layer in model.layers:
        layer.register_forward_hook(lambda mod, args, out: seen.append(out[1].norm().item()))
    with torch.no_grad():
        model(torch.randn(1, 128, 128))
    # blocks 2i and 2i+1 see the same residual norm; it is (r + h) doubled at the next pair
    assert all(math.isclose(seen[2 * i], seen[2 * i + 1], rel_tol=1e-5) for i in range(3))
    assert seen[2] > 1.5 * seen[0] and seen[4] > 1.5 * seen[2]


def test_batch_equals_rows_and_training_backward() -> None:
    model = small()
    x = torch.randn(3, 100, 128)
    with torch.no_grad():
        batch = model(x)
        rows = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, rows, rtol=1e-5, atol=1e-6)
    model.train()
    model(x).square().sum().backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["layers.0.mixer.A_b_log"].abs().sum() > 0 and grads["pos_embed"].abs().sum() > 0


# ------------------------------------------------------------------------------------ position table


def bilinear_1d(values: np.ndarray, new: int, axis: int) -> np.ndarray:
    """PyTorch's bilinear (align_corners=False) along one axis: source x = (i + 0.5) * old / new - 0.5, clamped."""
    old = values.shape[axis]
    src = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
    moved = np.moveaxis(values, axis, -1)
    out = np.apply_along_axis(lambda row: np.interp(src, np.arange(old), row), -1, moved)
    return np.moveaxis(out, -1, axis)


def authors_rule_numpy(grid: np.ndarray, freq: int, time: int, rows: int = 8) -> np.ndarray:
    """Independent version of the authors' fine-tuning adaptation of a (F, T, D) table."""
    p_freq, p_time = grid.shape[:2]
    if time < p_time:
        start = p_time // 2 - time // 2
        grid = grid[:, start:start + time]
    else:  # bilinear to (rows, time): separable, time then frequency
        grid = bilinear_1d(bilinear_1d(grid, time, axis=1), rows, axis=0)
    if freq < p_freq:
        start = p_freq // 2 - freq // 2
        grid = grid[start:start + freq]
    else:
        grid = bilinear_1d(grid, freq, axis=0)
    return grid


@pytest.mark.parametrize("frames, grid, crop", [(1024, (12, 101), None), (512, (12, 50), (7, 57)),
                                                (128, (12, 12), (26, 38))])
def test_position_table_adaptation_for_the_recipe_geometries(frames: int, grid, crop) -> None:
    g = torch.Generator().manual_seed(frames)
    table = torch.randn(1, 8 * 64, 6, generator=g, dtype=torch.float64)  # pretraining: 8 x 64 patches
    config = SSAMBAConfig(input_tdim=frames, embed_dim=6, depth=2)
    assert config.grid == grid
    got = adapt_position_table(table, (8, 64), grid, time_resize_rows=8).reshape(*grid, 6).numpy()
    want = authors_rule_numpy(table.reshape(8, 64, 6).numpy(), *grid)
    np.testing.assert_allclose(got, want, atol=1e-12)
    if crop is not None:  # ESC-50 / Speech Commands: the crop keeps columns [7, 57) / [26, 38)
        cropped = table.reshape(8, 64, 6)[:, crop[0]:crop[1]].numpy()
        np.testing.assert_allclose(got, bilinear_1d(cropped, 12, axis=0), atol=1e-12)


def test_hard_coded_rows_and_the_frequency_crop() -> None:
    g = torch.Generator().manual_seed(5)
    table = torch.randn(1, 6 * 20, 3, generator=g, dtype=torch.float64)
    grid = table.reshape(6, 20, 3).numpy()
    authors = adapt_position_table(table, (6, 20), (12, 30), time_resize_rows=8).reshape(12, 30, 3).numpy()
    np.testing.assert_allclose(authors, authors_rule_numpy(grid, 12, 30), atol=1e-12)  # 6 -> 8 -> 12 rows
    direct = adapt_position_table(table, (6, 20), (12, 30)).reshape(12, 30, 3).numpy()
    np.testing.assert_allclose(direct, bilinear_1d(bilinear_1d(grid, 30, 1), 12, 0), atol=1e-12)
    assert np.abs(direct - authors).max() > 1e-3  # the hard-coded 8 rows change the table
    cropped = adapt_position_table(table, (6, 20), (4, 10)).reshape(4, 10, 3).numpy()
    np.testing.assert_allclose(cropped, grid[1:5, 5:15], atol=0)  # centre rows [1, 5) (intended crop)


def test_inputs_longer_or_shorter_than_the_table() -> None:
    model = small(fstride=16, tstride=16)  # table: 8 x 8 patches (128 frames)
    table = model.pos_embed.detach()[:, 1:].reshape(8, 8, 32).numpy()
    for frames, time in [(400, 25), (48, 3), (5, 1)]:
        x = torch.randn(2, frames, 128)
        with torch.no_grad():
            got = model(x)
        if time > 8:
            expected = bilinear_1d(table, time, axis=1)
        else:
            expected = table[:, 4 - time // 2: 4 - time // 2 + time]
        twin = small(fstride=16, tstride=16, input_tdim=max(frames, 16))
        twin.load_state_dict({**model.state_dict(), "pos_embed": torch.cat(
            [model.pos_embed[:, :1].detach(), torch.from_numpy(expected).float().reshape(1, -1, 32)], 1)})
        padded = F.pad(x, (0, 0, 0, max(0, 16 - frames)))
        with torch.no_grad():
            torch.testing.assert_close(got, twin(padded), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- authors' checkpoints


def to_authors_pretrain(model: SSAMBA) -> dict[str, torch.Tensor]:
    """Rename our keys to the authors' self-supervised layout (SSL heads random, no mlp_head)."""
    d = model.config.embed_dim
    sd = {"module.p_input_fdim": torch.tensor(128), "module.p_input_tdim": torch.tensor(model.config.input_tdim),
          "module.mask_embed": torch.randn(1, 1, d)}
    for key, value in model.state_dict().items():
        if not key.startswith("mlp_head."):
            sd["module.v." + key] = value.clone()
        if key == "patch_embed.proj.bias":
            sd["module.v.head.weight"], sd["module.v.head.bias"] = torch.randn(1000, d), torch.randn(1000)
    for name in ("cpredlayer", "gpredlayer"):
        sd.update({f"module.{name}.0.weight": torch.randn(d, d), f"module.{name}.0.bias": torch.randn(d),
                   f"module.{name}.2.weight": torch.randn(256, d), f"module.{name}.2.bias": torch.randn(256)})
    return sd


def load_authors(path, **geometry) -> SSAMBA:
    config, state = config_and_state_from_authors(load_state_dict_file(path), source=str(path), **geometry)
    model = SSAMBA(config).eval()
    load_weights(model, state, source=str(path), key_name=authors_key)
    return model


def test_fine_tuned_layout_loads_with_identical_outputs(tmp_path) -> None:
    model = small(input_tdim=512, num_classes=50)  # ESC-50 geometry: stride 10, 12 x 50 patches
    sd = to_authors_finetuned(model)
    assert is_authors_state_dict(sd) and authors_layout(sd) == "finetuned"
    torch.save(sd, tmp_path / "best_audio_model.pth")
    loaded = load_authors(tmp_path / "best_audio_model.pth")
    assert loaded.config == model.config
    x = torch.randn(2, 512, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # the same file fine-tuned again at another length and 3 classes: table cropped, fresh head
    shorter = load_authors(tmp_path / "best_audio_model.pth", input_tdim=128, num_classes=3)
    assert shorter.config.grid == (12, 12) and shorter.config.num_classes == 3
    start = 50 // 2 - 12 // 2
    torch.testing.assert_close(shorter.pos_embed[:, 1:].reshape(12, 12, 32),
                               model.pos_embed[:, 1:].reshape(12, 50, 32)[:, start:start + 12])


def test_self_supervised_layout_loads_and_adapts_to_fine_tuning_geometry(tmp_path) -> None:
    pretrained = small(fstride=16, tstride=16, input_tdim=1024)  # pretraining: 8 x 64 patches
    sd = to_authors_pretrain(pretrained)
    assert len(sd) == 3 + 4 + 2 + 4 * 18 + 2 + 8 and authors_layout(sd) == "pretrain"
    torch.save(sd, tmp_path / "ssamba_tiny_400.pth")
    # same geometry: the encoder is the pretrained one, with a fresh head for 7 classes
    same = load_authors(tmp_path / "ssamba_tiny_400.pth", fstride=16, tstride=16, input_tdim=1024, num_classes=7)
    encoder = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("mlp_head.")}
    for key, value in encoder.items():
        assert torch.equal(same.state_dict()[key], value), key
    x = torch.randn(2, 1024, 128)
    with torch.no_grad():
        torch.testing.assert_close(same.forward_features(x), pretrained.forward_features(x), rtol=0, atol=0)
    # the recipes' fine-tuning geometry (stride 10): Speech Commands, 128 frames
    sc = load_authors(tmp_path / "ssamba_tiny_400.pth", input_tdim=128, num_classes=35)
    assert (sc.config.fstride, sc.config.tstride, sc.config.grid) == (10, 10, (12, 12))
    want = authors_rule_numpy(pretrained.pos_embed.detach()[0, 1:].reshape(8, 64, 32).numpy(), 12, 12)
    np.testing.assert_allclose(sc.pos_embed.detach()[0, 1:].reshape(12, 12, 32).numpy(), want, atol=1e-6)
    assert torch.equal(sc.pos_embed[0, 0], pretrained.pos_embed[0, 0])
    assert torch.equal(sc.patch_embed.proj.weight, pretrained.patch_embed.proj.weight)
    assert sc.patch_embed.proj.stride == (10, 10)
    assert torch.equal(sc.mlp_head[0].weight, torch.ones(32)) and sc.mlp_head[1].weight.shape == (35, 32)


def test_export_to_the_authors_layouts_round_trips(tmp_path) -> None:
    model = small(input_tdim=512, num_classes=50)
    exported = state_dict_to_authors(model.state_dict(), model.config)
    assert list(exported) == list(to_authors_finetuned(model))  # same keys in the same order
    assert all(k.startswith("module.") for k in exported)
    config, state = config_and_state_from_authors(exported)
    back = SSAMBA(config).eval()
    load_weights(back, state, key_name=authors_key)
    x = torch.randn(1, 512, 128)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="non-overlapping patches"):
        state_dict_to_authors(model.state_dict(), model.config, layout="pretrain")
    ssl_model = small(fstride=16, tstride=16, input_tdim=1024)
    ssl = state_dict_to_authors(ssl_model.state_dict(), ssl_model.config, layout="pretrain")
    assert list(ssl) == list(to_authors_pretrain(ssl_model))
    assert ssl["module.p_input_tdim"].item() == 1024 and ssl["module.p_input_tdim"].dtype == torch.int64
    with torch.device("meta"):
        tiny = dass.create_model("ssamba_tiny", fstride=16, tstride=16)
    assert len(state_dict_to_authors(tiny.state_dict(), tiny.config, layout="pretrain")) == 451  # as released
    assert len(state_dict_to_authors(tiny.state_dict(), tiny.config)) == 444


def test_bad_checkpoints_give_one_readable_error(tmp_path) -> None:
    model = small(input_tdim=512, num_classes=50)
    sd = to_authors_finetuned(model)
    sd["module.v.layers.3.mixer.x_proj.weight"] = torch.zeros(30, 64)
    del sd["module.v.layers.2.mixer.D_b"]
    sd["module.v.layers.1.mixer.extra"] = torch.zeros(3)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as info:
        load_authors(tmp_path / "broken.pth")
    message = str(info.value)
    assert "broken.pth does not fit the ssamba model" in message
    assert "missing keys (1):\n    module.v.layers.2.mixer.D_b" in message
    assert "unexpected keys (1):\n    module.v.layers.1.mixer.extra" in message
    assert "module.v.layers.3.mixer.x_proj.weight: checkpoint (30, 64) vs model (34, 64)" in message

    with pytest.raises(CheckpointError, match=r"norms are LayerNorm \(module.v.layers.0.norm.bias is present\) "
                                              r"but norm='rms'"):
        config_and_state_from_authors(to_authors_finetuned(model), norm="rms")
    rms = small(norm="rms", input_tdim=512)
    with pytest.raises(CheckpointError, match=r"norms are RMSNorm \(module.v.layers.0.norm.bias is absent\) "
                                              r"but norm='layer'.*norm='rms'"):
        config_and_state_from_authors(to_authors_finetuned(rms), norm="layer")
    assert config_and_state_from_authors(to_authors_finetuned(rms))[0].norm == "rms"
    cut = {**to_authors_finetuned(model), "module.v.pos_embed": model.pos_embed.detach()[:, :600]}
    with pytest.raises(CheckpointError, match="pos_embed has 600 positions, not 1 \\+ 12 x T' .*checkpoint_fstride"):
        config_and_state_from_authors(cut)
    ssl = to_authors_pretrain(small(fstride=16, tstride=16, input_tdim=1024))
    ssl["module.p_input_tdim"] = torch.tensor(512)
    with pytest.raises(CheckpointError, match="has 513 positions but the pretraining input 128 x 512"):
        config_and_state_from_authors(ssl)
    with pytest.raises(CheckpointError, match="not an SSAMBA checkpoint.*module.v.layers.0.mixer.A_log"):
        config_and_state_from_authors({"module.v.cls_token": torch.zeros(1, 1, 8)})


def test_our_folder_round_trip(tmp_path) -> None:
    model = small(labels=[f"c{i}" for i in range(5)], pooling="cls")
    dass.save_pretrained(model, tmp_path / "ssamba")
    loaded = dass.from_pretrained(tmp_path / "ssamba")
    assert type(loaded) is SSAMBA and loaded.config == model.config
    x = torch.randn(1, 200, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
