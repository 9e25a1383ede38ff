"""Fast and tiled inference (dass.inference) against the readable model and float64 references."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dass.errors import AudioError, ConfigError
from dass.features import FeatureExtractor
from dass.inference import (FastDASS, file_features, forward_features, predict, predict_timeline,
                            predict_with_timeline)
from dass.inference import kernels
from dass.inference.timeline import (plot_timeline, segment_bounds, segment_logits, timeline_peaks,
                                     write_timeline, write_timeline_csv, write_timeline_json)
from dass.models.dass import POOLING_MODES, cross_merge, cross_scan, dass_small, dass_tiny
from dass.ops import selective_scan_ref

torch.set_num_threads(2)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter (LayerNorm weights and biases, Ds, A_logs, biases included) so no
    default value (ones, zeros) can hide a mix-up of parameters."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        scale = 0.02 if p.dim() >= 2 else 0.2
        p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise(dass_tiny(num_classes=11))


# ------------------------------------------------------------------------------------- kernels


def test_layer_norm_rows_matches_torch() -> None:
    x = torch.randn(37, 29) * 3 + 1
    w, b = torch.randn(29), torch.randn(29)
    out = torch.empty_like(x)
    kernels.layer_norm_rows(x.numpy(), w.numpy(), b.numpy(), np.float32(1e-5), out.numpy())
    ref = F.layer_norm(x.double(), (29,), w.double(), b.double(), 1e-5)
    assert rel_err(out, ref) < 1e-6


def test_dwconv_silu_matches_conv2d() -> None:
    n, height, channels = 7, 5, 19
    v = torch.randn(n + 2, height, channels)
    weight = torch.randn(channels, 1, 3, 3)  # the model's layout: (C, 1, freq, time)
    out = torch.empty(n, height, channels)
    kernels.dwconv3x3_silu(v.numpy(), weight[:, 0].permute(2, 1, 0).contiguous().numpy(), out.numpy(), 0, n)
    image = v.permute(2, 1, 0)[None].double()  # (1, C, H, n + 2)
    ref = F.silu(F.conv2d(image, weight.double(), padding=(1, 0), groups=channels))[0].permute(2, 1, 0)
    assert rel_err(out, ref) < 1e-6


def _scan_reference(dt, dt_bias, a_coef, ds, u, xdbl, rank):
    """The four-direction scan in float64 with the model's cross_scan / cross_merge and selective_scan_ref."""
    width, height, channels = u.shape
    def to_model(t):  # (W, H, ...) -> (1, ..., H, W)
        return t.permute(*range(2, t.dim()), 1, 0)[None] if t.dim() > 2 else t.permute(1, 0)[None, None]
    us = cross_scan(to_model(u))  # (1, 4, D, L)
    deltas = torch.stack([cross_scan(to_model(dt[k]))[:, k] for k in range(4)], 1)
    bs = torch.stack([cross_scan(to_model(xdbl[:, :, k, rank]))[:, k] for k in range(4)], 1)  # (1, 4, 1, L)
    cs = torch.stack([cross_scan(to_model(xdbl[:, :, k, rank + 1]))[:, k] for k in range(4)], 1)
    ys = selective_scan_ref(us.reshape(1, 4 * channels, -1), deltas.reshape(1, 4 * channels, -1),
                            a_coef.reshape(-1, 1).double(), bs, cs, D=ds.reshape(-1), delta_bias=dt_bias.reshape(-1))
    return cross_merge(ys.view(1, 4, channels, -1), height, width)[0].permute(2, 1, 0)  # (W, H, D)


def _end_states(height: int, channels: int) -> list[np.ndarray]:
    """Output arrays for the end states of k0, k2 (per row) and k1, k3."""
    return [np.empty((height, channels), np.float32) for _ in range(2)] + [np.empty(channels, np.float32) for _ in range(2)]


def _scan_inputs(width, height, channels, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = torch.randn(4, width, height, channels, generator=g)
    dt_bias = torch.randn(4, channels, generator=g)
    a_coef = -torch.rand(4, channels, generator=g) * 2
    ds = torch.randn(4, channels, generator=g)
    u = torch.randn(width, height, channels, generator=g)
    xdbl = torch.randn(width, height, 4, rank + 2, generator=g)
    return dt, dt_bias, a_coef, ds, u, xdbl


@pytest.mark.parametrize("width, height, channels, block", [(9, 4, 37, 16), (1, 3, 16, 16), (13, 1, 5, 16),
                                                          (6, 3, 253, 256)])
def test_scan_tile_matches_reference(width: int, height: int, channels: int, block: int) -> None:
    """scan_tile against a float64 loop; 253 channels in one pass = vectors in runs of 8, 4, 2 and 1
    (15 of them) and 13 channels of scalar tail, and 126 (the half range) = 7 vectors + 14."""
    rank = 3
    dt, dt_bias, a_coef, ds, u, xdbl = _scan_inputs(width, height, channels, rank)
    ref = _scan_reference(dt, dt_bias, a_coef, ds, u, xdbl, rank)
    y = np.empty((width, height, channels), np.float32)
    zeros_rows, zeros_col = np.zeros((height, channels), np.float32), np.zeros(channels, np.float32)
    ends = _end_states(height, channels)
    for c_lo, c_hi in ((0, channels), (0, channels // 2)):  # a channel range leaves the rest alone
        y[:] = 7.0
        kernels.scan_tile(dt.numpy(), dt_bias.numpy(), a_coef.numpy(), u.numpy(), xdbl.numpy(), rank,
                          ds.sum(0).numpy(), True, zeros_rows, zeros_rows, zeros_col, zeros_col, y, *ends,
                          c_lo, c_hi, block)
        assert rel_err(torch.from_numpy(y[..., c_lo:c_hi]), ref[..., c_lo:c_hi]) < 2e-5
        assert np.all(y[..., c_hi:] == 7.0)


@pytest.mark.parametrize("channels, block", [(21, 16), (150, 256)])
def test_scan_split_into_tiles_matches_whole(channels: int, block: int) -> None:
    """Transfer pass + state chaining + per-tile scans == one scan over the whole map (150 channels:
    9 vectors in runs of 8 and 1, and 6 scalar channels)."""
    width, height, rank = 23, 3, 2
    dt, dt_bias, a_coef, ds, u, xdbl = _scan_inputs(width, height, channels, rank, seed=1)
    ref = _scan_reference(dt, dt_bias, a_coef, ds, u, xdbl, rank)
    tiles = [(0, 5), (5, 6), (6, 17), (17, 23)]
    n = len(tiles)
    args = lambda a, b: (np.ascontiguousarray(dt[:, a:b].numpy()), dt_bias.numpy(), a_coef.numpy(),  # noqa: E731
                         np.ascontiguousarray(u[a:b].numpy()), np.ascontiguousarray(xdbl[a:b].numpy()), rank)
    end_f, sum_f, end_b, sum_b = (np.empty((n, height, channels), np.float32) for _ in range(4))
    end_c, sum_c = (np.empty((n, channels), np.float32) for _ in range(2))
    for j, (a, b) in enumerate(tiles):
        kernels.scan_transfer(*args(a, b), end_f[j], sum_f[j], end_b[j], sum_b[j], end_c[j], sum_c[j], 0, channels, block)
    init_f, init_b, init_c = np.empty_like(end_f), np.empty_like(end_b), np.empty_like(end_c)
    kernels.chain_row_states(end_f, sum_f, a_coef[0].numpy(), False, init_f)
    kernels.chain_row_states(end_b, sum_b, a_coef[2].numpy(), True, init_b)
    kernels.chain_column_states(end_c, sum_c, a_coef[3].numpy(), init_c)
    carried = np.zeros(channels, np.float32)
    out = np.empty((width, height, channels), np.float32)
    ends = _end_states(height, channels)
    for j, (a, b) in enumerate(tiles):
        y = np.empty((b - a, height, channels), np.float32)
        kernels.scan_tile(*args(a, b), ds.sum(0).numpy(), False, init_f[j], init_b[j], carried, init_c[j], y, *ends,
                          0, channels, block)
        carried = ends[2].copy()
        out[a:b] = y
    assert rel_err(torch.from_numpy(out), ref) < 2e-5


def test_scan_tile_refuses_strided_arrays() -> None:
    width, height, channels, rank = 3, 2, 32, 2
    dt, dt_bias, a_coef, ds, u, xdbl = _scan_inputs(width, height, channels * 2, rank)
    strided_u = u.numpy()[..., ::2]  # every other channel: a view with a stride of 2
    rows, col = np.zeros((height, channels), np.float32), np.zeros(channels, np.float32)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        kernels.scan_tile(np.ascontiguousarray(dt.numpy()[..., ::2]), np.ascontiguousarray(dt_bias.numpy()[:, ::2]),
                          np.ascontiguousarray(a_coef.numpy()[:, ::2]), strided_u, xdbl.numpy(), rank,
                          np.ascontiguousarray(ds.sum(0).numpy()[::2]), True, rows, rows, col, col,
                          np.empty((width, height, channels), np.float32), *_end_states(height, channels),
                          0, channels, 16)


def test_scan_kernels_without_avx512(tmp_path) -> None:
    """The two scan-kernel tests above, in a process whose numba compiles for a CPU without AVX-512
    (exp from exponent bits, the 16-lane vectors split over AVX2 registers)."""
    tests = Path(__file__).resolve()
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), "-k",
                             "scan_tile_matches_reference or scan_split_into_tiles"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "6 passed" in result.stdout, result.stdout[-1000:]


# ---------------------------------------------------------------------------------- fast forward


@pytest.mark.parametrize("frames, batch", [(333, 2), (64, 1), (7, 1)])
def test_fast_forward_matches_model_tiny(tiny, frames: int, batch: int) -> None:
    x = torch.randn(batch, frames, 128)
    with torch.inference_mode():
        ref_logits, ref_map = tiny(x), tiny.forward_features(x)
    engine = FastDASS(tiny)
    assert rel_err(engine.forward(x), ref_logits) < 1e-4
    assert rel_err(engine.forward_features(x), ref_map) < 1e-4


def test_fast_forward_matches_model_small_shaped() -> None:
    torch.manual_seed(1)
    model = randomise(dass_small(num_classes=13), seed=1)
    x = torch.randn(1, 150, 96)  # short input, a non-standard number of bins
    with torch.inference_mode():
        ref = model(x)
    for threads in (1, 2):
        assert rel_err(FastDASS(model, threads=threads).forward(x), ref) < 1e-4


def test_bfloat16_precision_is_close(tiny) -> None:
    x = torch.randn(1, 400, 128)
    exact = predict(tiny, x, precision="float32")
    low = predict(tiny, x, precision="bfloat16")
    assert 1e-6 < rel_err(low, exact) < 3e-2  # really bfloat16, and close
    with pytest.raises(ConfigError, match="precision must be one of float32, bfloat16, got 'half'"):
        predict(tiny, x, precision="half")


# ---------------------------------------------------------------------------------- tiled forward


def test_tiled_equals_untiled_all_poolings(tiny) -> None:
    x = torch.randn(5000, 128)
    untiled = forward_features(tiny, x, tile_frames=None)
    with torch.inference_mode():
        assert rel_err(untiled, tiny.forward_features(x[None])) < 1e-4
    # 96 frames: 24, 12, 6, 3 columns per tile in stages 1-4 (53, 53, 53, 53 tiles; uneven last tiles)
    tiled = forward_features(tiny, x, tile_frames=96)
    assert rel_err(tiled, untiled) < 1e-4
    for mode in POOLING_MODES:
        tiny.config.pooling = mode
        try:
            with torch.no_grad():
                expected = tiny.classifier.head(tiny.pool(untiled))
            assert rel_err(predict(tiny, x, tile_frames=1000), expected) < 1e-4, mode
            assert rel_err(predict(tiny, x, tile_frames=96), expected) < 1e-4, mode
        finally:
            tiny.config.pooling = "mean"


def test_tiles_of_one_column(tiny) -> None:
    x = torch.randn(1, 700, 64)
    ref = forward_features(tiny, x, tile_frames=None)
    assert rel_err(forward_features(tiny, x, tile_frames=4), ref) < 1e-4  # stage 1 tiles of 1 column


def test_predict_errors(tiny) -> None:
    with pytest.raises(AudioError, match=r"features must have shape \(T, F\) or \(B, T, F\), got \(2, 3, 4, 5\)"):
        predict(tiny, torch.zeros(2, 3, 4, 5))
    with pytest.raises(AudioError, match="features contain NaN or infinite values"):
        predict(tiny, torch.full((50, 128), float("nan")))
    with pytest.raises(ConfigError, match="tile_frames must be a positive number of frames or None, got 0"):
        predict(tiny, torch.zeros(50, 128), tile_frames=0)
    with pytest.raises(ConfigError, match="fast inference supports SSM state size d_state = 1"):
        FastDASS(dass_tiny(d_state=2))
    with pytest.raises(ConfigError, match="fast inference needs a DASS model, got Linear"):
        predict(torch.nn.Linear(2, 2), torch.zeros(50, 128))


# --------------------------------------------------------------------------------------- timeline


def _make_detector_head(model, steps: torch.Tensor, inside: torch.Tensor) -> None:
    """Turn class 0 of the head into a detector of the event columns ``inside`` of ``steps (W', C)``.

    Its weight is the direction from the quiet columns' mean to the event columns' mean, its bias
    puts the boundary half-way; every other class scores 0.
    """
    direction = steps[inside].mean(0) - steps[~inside].mean(0)
    midpoint = 0.5 * (steps[inside].mean(0) + steps[~inside].mean(0))
    with torch.no_grad():
        model.classifier.head.weight.zero_()
        model.classifier.head.bias.zero_()
        model.classifier.head.weight[0] = 10 * direction / direction.norm() ** 2
        model.classifier.head.bias[0] = -(model.classifier.head.weight[0] @ midpoint)


def _clip(frames: int, start: int, stop: int, seed: int) -> torch.Tensor:
    """Quiet features (-1 +- 0.05) with a loud event (+3) in frames [start, stop)."""
    g = torch.Generator().manual_seed(seed)
    x = -1.0 + 0.05 * torch.randn(frames, 128, generator=g)
    x[start:stop] += 3.0
    return x


def test_timeline_locates_loud_event() -> None:
    torch.manual_seed(0)
    model = dass_tiny(num_classes=2).eval()
    # A detector for class 0 made from the model's own features of another clip (event elsewhere):
    # the direction from the quiet columns' mean to the event columns' mean.
    steps = forward_features(model, _clip(2000, 500, 600, seed=1), tile_frames=None)[0].mean(1).T  # (W', C)
    centres = torch.arange(steps.shape[0]) * 32 + 16
    inside = (centres >= 500) & (centres < 600)
    _make_detector_head(model, steps, inside)

    test = _clip(4000, 2900, 3000, seed=2)  # event from 29.0 s to 30.0 s in 40 s of quiet
    times, scores = predict_timeline(model, test, segment_s=0.32, tile_frames=512)
    assert times.shape == (125, 2) and scores.shape == (125, 2)
    assert times[0].tolist() == [0.0, 0.32] and times[-1].tolist() == [39.68, 40.0]
    best = int(scores[:, 0].argmax())
    assert 29.0 <= times[best, 0] and times[best, 1] <= 30.0 + 0.32
    detected = times[scores[:, 0] > 0.5]
    assert len(detected) >= 1
    assert bool(((detected[:, 1] > 29.0) & (detected[:, 0] < 30.0)).all())
    far = (times[:, 1] < 27.0) | (times[:, 0] > 32.0)
    assert float(scores[far, 0].max()) < 0.1

    # Mean pooling: the clip logits are the column-weighted mean of the segment logits.
    times2, logits = predict_timeline(model, test, segment_s=1.0, tile_frames=None, probabilities=False)
    assert len(times2) == math.ceil(125 / 3)  # 3 columns (0.96 s) per segment, 2 in the last one
    weights = torch.tensor([3.0] * (len(times2) - 1) + [2.0])
    clip_logits = predict(model, test)
    assert rel_err((logits * weights[:, None]).sum(0) / weights.sum(), clip_logits[0]) < 1e-4
    clip, times3, segments = predict_with_timeline(model, test, segment_s=1.0, tile_frames=700)
    assert rel_err(clip, clip_logits.sigmoid()) < 1e-4
    assert torch.equal(times3, times2) and rel_err(segments, logits.sigmoid()) < 1e-4
    with pytest.raises(AudioError, match="a timeline is computed for one clip at a time, got a batch of 2"):
        predict_timeline(model, torch.zeros(2, 100, 128))
    with pytest.raises(ConfigError, match="segment length must be positive seconds, got 0"):
        predict_timeline(model, test, segment_s=0)


def test_segment_helpers() -> None:
    features = torch.arange(10.0).repeat(2, 1).T  # (W' = 10, C = 2), column j holds j
    logits = segment_logits(features, lambda pooled: pooled, steps=4)
    assert logits[:, 0].tolist() == [1.5, 5.5, 8.5]
    bounds = segment_bounds(num_frames=300, num_steps=10, steps=4)
    assert bounds.tolist() == [[0.0, 1.28], [1.28, 2.56], [2.56, 3.0]]


def test_timeline_writers(tmp_path) -> None:
    times = torch.tensor([[0.0, 1.0], [1.0, 1.5]], dtype=torch.float64)
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.7, 0.2, 0.05]])
    write_timeline_csv(tmp_path / "t.csv", times, scores, ["Dog", "Cat", "Bird"], source="a.wav")
    assert (tmp_path / "t.csv").read_text().splitlines() == [
        "file,start_s,end_s,Dog,Cat,Bird",
        "a.wav,0.00,1.00,0.10000,0.90000,0.00000",
        "a.wav,1.00,1.50,0.70000,0.20000,0.05000",
    ]
    write_timeline_json(tmp_path / "t.json", times, scores)
    document = json.loads((tmp_path / "t.json").read_text())
    assert document["labels"] == ["class_0", "class_1", "class_2"]
    assert document["end_s"] == [1.0, 1.5] and document["scores"][1] == [0.7, 0.2, 0.05]
    order = plot_timeline(tmp_path / "t.png", times, scores, top_k=2)
    assert order == [1, 0]
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json", "t.png"]  # no temp files left
    with pytest.raises(ConfigError, match="2 label names for 3 classes"):
        write_timeline_csv(tmp_path / "u.csv", times, scores, ["a", "b"])
    write_timeline(tmp_path / "w.json", times, scores)
    assert json.loads((tmp_path / "w.json").read_text()) == document
    assert timeline_peaks(times, scores, ["Dog", "Cat", "Bird"], top_k=2) == [
        {"index": 1, "label": "Cat", "peak": pytest.approx(0.9), "start_s": 0.0, "end_s": 1.0},
        {"index": 0, "label": "Dog", "peak": pytest.approx(0.7), "start_s": 1.0, "end_s": 1.5},
    ]


# ------------------------------------------------------------------------------ streaming features


@pytest.mark.parametrize("rate, channels", [(16000, 1), (22050, 2)])
def test_file_features_match_feature_extractor(tmp_path, rate: int, channels: int) -> None:
    import soundfile

    g = np.random.default_rng(rate)
    audio = (0.3 * g.standard_normal((rate * 3 + 77, channels)) + 0.05).astype(np.float32)
    path = tmp_path / "a.wav"
    soundfile.write(path, audio, rate, subtype="FLOAT")
    ref = FeatureExtractor(max_length=None).from_file(path)[0]
    out = file_features(path, block_seconds=0.7)  # many blocks
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 1e-5


def test_file_features_errors(tmp_path) -> None:
    import soundfile

    with pytest.raises(AudioError, match="nothere.wav: no such file"):
        file_features(tmp_path / "nothere.wav")
    bad = np.zeros((2000, 1), np.float32)
    bad[1500] = np.nan
    soundfile.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: contains NaN or infinite samples"):
        file_features(tmp_path / "nan.wav")
    soundfile.write(tmp_path / "short.wav", np.zeros((100, 1), np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="short.wav: too short"):
        file_features(tmp_path / "short.wav")


# ------------------------------------------------------------------------------ dass tag --timeline


def _burst_audio(seconds: float, start_s: float, stop_s: float, seed: int) -> np.ndarray:
    """Quiet noise (-60 dBFS) with a loud noise burst between ``start_s`` and ``stop_s``."""
    g = np.random.default_rng(seed)
    audio = 0.001 * g.standard_normal(int(seconds * 16000))
    audio[int(start_s * 16000):int(stop_s * 16000)] += 0.3 * g.standard_normal(int((stop_s - start_s) * 16000))
    return audio.astype(np.float32)


def test_tag_timeline_cli_locates_burst(tmp_path, capsys) -> None:
    import soundfile

    from dass.checkpoints import save_pretrained
    from dass.cli import main as cli_main

    torch.manual_seed(0)
    model = dass_tiny(num_classes=2, labels=["burst", "other"]).eval()
    # Detector for class 0 from the model's own features of another recording (burst at 5-6 s).
    feats = FeatureExtractor(max_length=None)(torch.from_numpy(_burst_audio(20, 5.0, 6.0, seed=1)))["input_values"]
    steps = forward_features(model, feats, tile_frames=None)[0].mean(1).T
    centres = (torch.arange(steps.shape[0]) * 32 + 16) * 0.01
    inside = (centres >= 5.0) & (centres < 6.0)
    _make_detector_head(model, steps, inside)
    save_pretrained(model, tmp_path / "model")
    wav = tmp_path / "long.wav"
    soundfile.write(wav, _burst_audio(45, 31.0, 32.0, seed=2), 16000, subtype="FLOAT")

    out_dir = tmp_path / "timelines"
    assert cli_main(["tag", str(wav), "--model", str(tmp_path / "model"), "--device", "cpu", "--timeline",
                     "--segment", "0.32", "--timeline-dir", str(out_dir), "--plot", "--min-frames", "0"]) == 0
    text = capsys.readouterr().out
    rows = (out_dir / "long.timeline.csv").read_text().splitlines()
    assert rows[0] == "file,start_s,end_s,burst,other"
    table = np.array([[float(v) for v in row.split(",")[1:]] for row in rows[1:]])
    best = table[np.argmax(table[:, 2])]
    assert 31.0 <= best[0] and best[1] <= 32.0 + 0.32, best
    assert table[(table[:, 1] < 29.0) | (table[:, 0] > 34.0), 2].max() < 0.1
    assert (out_dir / "long.timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "long.timeline.csv" in text and "burst" in text
