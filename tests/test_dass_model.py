"""The DASS network: parameter counts, key layout, any length, batching, pooling, an independent SS2D."""

from __future__ import annotations

import math

import pytest
import torch

import dass
from dass.errors import AudioError, CheckpointError, ConfigError
from dass.models.dass import DASS, SS2D, DASSConfig, DropPath, cross_merge, cross_scan, init_from_vmamba

torch.set_num_threads(1)


def tiny(**overrides) -> DASS:
    torch.manual_seed(0)
    return dass.create_model("dass_tiny", **{"num_classes": 7, **overrides}).eval()


def conv_out(n: int) -> int:
    """PyTorch's Conv2d output length for kernel 3, stride 2, padding 1."""
    return math.floor((n + 2 * 1 - 3) / 2) + 1


# ---------------------------------------------------------------------------- sizes and key layout


@pytest.mark.parametrize("name, millions, tensors", [("dass_small", 29.88, 276), ("dass_medium", 48.65, 492)])
def test_parameter_counts(name: str, millions: float, tensors: int) -> None:
    with torch.device("meta"):
        model = dass.create_model(name, num_classes=527)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == millions
    assert len(model.state_dict()) == tensors


def spec_3a_shapes(depths, dims, num_classes: int, n: int = 1) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the authors' checkpoint (SPEC §3a table), without ``module.v.``."""
    shapes = {
        "patch_embed.0.weight": (dims[0] // 2, 1, 3, 3), "patch_embed.0.bias": (dims[0] // 2,),
        "patch_embed.2.weight": (dims[0] // 2,), "patch_embed.2.bias": (dims[0] // 2,),
        "patch_embed.5.weight": (dims[0], dims[0] // 2, 3, 3), "patch_embed.5.bias": (dims[0],),
        "patch_embed.7.weight": (dims[0],), "patch_embed.7.bias": (dims[0],),
        "classifier.norm.weight": (dims[-1],), "classifier.norm.bias": (dims[-1],),
        "classifier.head.weight": (num_classes, dims[-1]), "classifier.head.bias": (num_classes,),
    }
    for i, (depth, c) in enumerate(zip(depths, dims)):
        r = math.ceil(c / 16)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            shapes.update({
                p + "norm.weight": (c,), p + "norm.bias": (c,),
                p + "op.in_proj.weight": (c, c), p + "op.conv2d.weight": (c, 1, 3, 3),
                p + "op.x_proj_weight": (4, r + 2 * n, c), p + "op.dt_projs_weight": (4, c, r),
                p + "op.dt_projs_bias": (4, c), p + "op.A_logs": (4 * c, n), p + "op.Ds": (4 * c,),
                p + "op.out_norm.weight": (c,), p + "op.out_norm.bias": (c,),
                p + "op.out_proj.weight": (c, c),
                p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
                p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,),
            })
        if i + 1 < len(dims):
            shapes.update({
                f"layers.{i}.downsample.1.weight": (dims[i + 1], c, 3, 3),
                f"layers.{i}.downsample.1.bias": (dims[i + 1],),
                f"layers.{i}.downsample.3.weight": (dims[i + 1],),
                f"layers.{i}.downsample.3.bias": (dims[i + 1],),
            })
    return shapes


def test_state_dict_is_the_authors_layout_without_prefix() -> None:
    with torch.device("meta"):
        model = dass.create_model("dass_small")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == spec_3a_shapes((2, 2, 8, 2), (96, 192, 384, 768), 527)


# ------------------------------------------------------------------------------------ config


def test_config_round_trip_and_errors() -> None:
    config = DASSConfig(depths=(1, 2), dims=(8, 16), num_classes=3, pooling="sum", labels=["a", "b", "c"])
    again = DASSConfig.from_dict(config.to_dict())
    assert again == config and again.to_dict()["depths"] == [1, 2] and again.model_type == "dass"
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) 'patch_size'"):
        DASSConfig.from_dict({**config.to_dict(), "patch_size": 4})
    with pytest.raises(ConfigError, match="unknown pooling 'max'; choose one of mean, first, middle, last, sum"):
        DASSConfig(pooling="max")
    with pytest.raises(ConfigError, match="2 labels given for num_classes=3"):
        DASSConfig(num_classes=3, labels=["a", "b"])
    with pytest.raises(ConfigError, match="must be non-empty and of the same length"):
        DASSConfig(depths=(1, 1), dims=(8,))
    with pytest.raises(ConfigError, match="unknown model 'dass_huge'"):
        dass.create_model("dass_huge")
    assert {"dass_small", "dass_medium", "dass_tiny"} <= set(dass.list_models())


def test_init_is_vmamba_v0() -> None:
    model = tiny()
    op = model.layers[1].blocks[0].op
    assert torch.equal(op.A_logs, torch.zeros(4 * 96, 1))  # log(1) with N = 1
    assert torch.equal(op.Ds, torch.ones(4 * 96))
    dt = torch.nn.functional.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    r = math.ceil(96 / 16)
    assert op.dt_projs_weight.abs().max() <= r**-0.5
    head = model.classifier.head
    assert torch.equal(head.bias, torch.zeros(7)) and abs(head.weight.std().item() - 0.02) < 0.004
    assert torch.equal(model.layers[0].blocks[0].norm.weight, torch.ones(48))
    with torch.device("meta"):
        ssm4 = SS2D(16, d_state=4)
    assert ssm4.A_logs.shape == (64, 4)
    assert torch.allclose(SS2D(16, d_state=4).A_logs[5], torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])))


# ------------------------------------------------------------------------------ shapes and lengths


@pytest.mark.parametrize("frames", [1024, 998, 200, 5000, 5])
def test_any_number_of_frames_gives_finite_logits(frames: int) -> None:
    model = tiny()
    x = torch.randn(1, frames, 128)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    h, w = 128, frames
    for _ in range(5):  # stem (2 convs) + 3 downsampling convs
        h, w = conv_out(h), conv_out(w)
    assert features.shape == (1, 384, h, w)
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()


def test_batch_equals_rows() -> None:
    model = tiny()
    x = torch.randn(3, 77, 128)
    with torch.no_grad():
        batch = model(x)
        rows = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, rows, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])


def test_bad_input_shape_is_a_readable_error() -> None:
    with pytest.raises(AudioError, match=r"DASS expects features of shape \(batch, time, freq\), got \(100, 128\)"):
        tiny()(torch.randn(100, 128))


# ------------------------------------------------------------------------------------------ pooling


def test_every_pooling_option() -> None:
    model = tiny()
    x = torch.randn(2, 300, 128)
    with torch.no_grad():
        features = model.forward_features(x)  # (2, 384, 4, 10)
    assert features.shape == (2, 384, 4, 10)
    per_time = features.mean(dim=2)  # mean over frequency: (B, C, W')
    expected = {
        "mean": features.mean(dim=(2, 3)),
        "sum": features.sum(dim=(2, 3)),
        "first": per_time[:, :, 0],
        "middle": per_time[:, :, 5],
        "last": per_time[:, :, 9],
    }
    for mode, want in expected.items():
        model.config.pooling = mode
        torch.testing.assert_close(model.pool(features), want)
    for i, a in enumerate(expected):
        for b in list(expected)[i + 1 :]:
            assert not torch.allclose(expected[a], expected[b]), (a, b)
    # the logits are the head applied to the pooled vector
    last = tiny(pooling="last")
    with torch.no_grad():
        torch.testing.assert_close(last(x), last.classifier.head(expected["last"]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- independent SS2D (plain python)


def cross_scan_orders(height: int, width: int) -> list[list[tuple[int, int]]]:
    """(h, w) visited at each step of the 4 scan directions (SPEC §2 step 2)."""
    row_major = [(h, w) for h in range(height) for w in range(width)]
    col_major = [(h, w) for w in range(width) for h in range(height)]
    return [row_major, col_major, row_major[::-1], col_major[::-1]]


def ss2d_python(op: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D forward with plain Python loops in float64 (SPEC §2 steps 1-6), ``(B, C, H, W)``."""
    def lst(t: torch.Tensor):
        return t.detach().double().tolist()

    w_in, w_conv, w_out = lst(op.in_proj.weight), lst(op.conv2d.weight), lst(op.out_proj.weight)
    x_proj, dt_w, dt_b = lst(op.x_proj_weight), lst(op.dt_projs_weight), lst(op.dt_projs_bias)
    a_logs, ds = lst(op.A_logs), lst(op.Ds)
    ln_w, ln_b, eps = lst(op.out_norm.weight), lst(op.out_norm.bias), op.out_norm.eps
    batch, channels, height, width = x.shape
    d_inner, n, rank = op.d_inner, op.d_state, op.dt_rank
    out = torch.zeros(batch, channels, height, width, dtype=torch.float64)
    for b in range(batch):
        xb = lst(x[b])
        v = [[[sum(w_in[d][c] * xb[c][h][w] for c in range(channels)) for w in range(width)]
              for h in range(height)] for d in range(d_inner)]
        u = [[[0.0] * width for _ in range(height)] for _ in range(d_inner)]
        for d in range(d_inner):
            for h in range(height):
                for w in range(width):
                    s = 0.0
                    for i in (-1, 0, 1):
                        for j in (-1, 0, 1):
                            if 0 <= h + i < height and 0 <= w + j < width:
                                s += w_conv[d][0][i + 1][j + 1] * v[d][h + i][w + j]
                    u[d][h][w] = s / (1.0 + math.exp(-s))  # SiLU
        y = [[[0.0] * width for _ in range(height)] for _ in range(d_inner)]
        for k, order in enumerate(cross_scan_orders(height, width)):
            state = [[0.0] * n for _ in range(d_inner)]
            for h, w in order:
                uu = [u[d][h][w] for d in range(d_inner)]
                proj = [sum(x_proj[k][r][d] * uu[d] for d in range(d_inner)) for r in range(rank + 2 * n)]
                dt_low, bb, cc = proj[:rank], proj[rank : rank + n], proj[rank + n :]
                for d in range(d_inner):
                    ch = k * d_inner + d
                    pre = sum(dt_w[k][d][r] * dt_low[r] for r in range(rank)) + dt_b[k][d]
                    delta = math.log1p(math.exp(pre))  # softplus
                    out_t = ds[ch] * uu[d]
                    for m in range(n):
                        a = -math.exp(a_logs[ch][m])
                        state[d][m] = math.exp(delta * a) * state[d][m] + delta * bb[m] * uu[d]
                        out_t += cc[m] * state[d][m]
                    y[d][h][w] += out_t
        for h in range(height):
            for w in range(width):
                col = [y[d][h][w] for d in range(d_inner)]
                mean = sum(col) / d_inner
                var = sum((c - mean) ** 2 for c in col) / d_inner
                normed = [(c - mean) / math.sqrt(var + eps) * ln_w[d] + ln_b[d] for d, c in enumerate(col)]
                for c in range(channels):
                    out[b, c, h, w] = sum(w_out[c][d] * normed[d] for d in range(d_inner))
    return out


@pytest.mark.parametrize("d_state, ssm_ratio, dt_rank", [(1, 1.0, "auto"), (3, 1.5, 2)])
def test_ss2d_matches_plain_python_reference(d_state: int, ssm_ratio: float, dt_rank) -> None:
    torch.manual_seed(3)
    op = SS2D(4, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank)
    with torch.no_grad():  # move every parameter away from its init so that each one matters
        for p in op.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        got = op(x)
    want = ss2d_python(op, x)
    assert got.shape == (2, 4, 3, 5)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_cross_scan_and_merge() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, 20)
    for k, order in enumerate(cross_scan_orders(4, 5)):
        for t, (h, w) in enumerate(order):
            assert torch.equal(xs[:, k, :, t], x[:, :, h, w])
    torch.testing.assert_close(cross_merge(xs, 4, 5), 4 * x)


# ------------------------------------------------------------------------------- training bits


def test_backward_and_drop_path() -> None:
    model = tiny(drop_path_rate=0.5).train()
    rates = [block.drop_path.p for stage in model.layers for block in stage.blocks]
    assert rates == pytest.approx([0.0, 0.5 / 4, 1.0 / 4, 1.5 / 4, 0.5])
    x = torch.randn(2, 37, 128)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.layers[0].blocks[0].op.A_logs.grad.abs().sum() > 0
    drop = DropPath(0.5).train()
    torch.manual_seed(0)
    out = drop(torch.ones(1000, 3))
    kept = out[:, 0] != 0
    assert torch.equal(out[kept], torch.full_like(out[kept], 2.0)) and 400 < kept.sum() < 600
    assert torch.equal(DropPath(0.5).eval()(torch.ones(4, 3)), torch.ones(4, 3))


def test_init_from_vmamba(tmp_path) -> None:
    source = tiny(num_classes=1000)
    vmamba = {k: v.clone() for k, v in source.state_dict().items()}
    rgb = torch.randn(24, 3, 3, 3)
    vmamba["patch_embed.0.weight"] = rgb
    torch.save({"model": vmamba, "epoch": 300}, tmp_path / "vssm.pth")
    model = tiny()
    head_before = model.classifier.head.weight.clone()
    report = init_from_vmamba(model, tmp_path / "vssm.pth")
    assert report["skipped"] == ["classifier.head.bias", "classifier.head.weight"]
    got = model.state_dict()
    torch.testing.assert_close(got["patch_embed.0.weight"], rgb.sum(dim=1, keepdim=True))
    assert torch.equal(got["patch_embed.0.bias"], vmamba["patch_embed.0.bias"])
    assert torch.equal(got["layers.2.blocks.1.op.x_proj_weight"], vmamba["layers.2.blocks.1.op.x_proj_weight"])
    assert torch.equal(model.classifier.head.weight, head_before)

    del vmamba["layers.3.blocks.0.op.Ds"]
    torch.save({"model": vmamba}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\):\n    layers\.3\.blocks\.0\.op\.Ds"):
        init_from_vmamba(tiny(), tmp_path / "broken.pth")
