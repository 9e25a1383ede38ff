"""Masked-patch pretraining: the masking rule, the two objectives against formulas written here, the
schedule, unlabelled sources, torchrun (2 processes = 1), SIGKILL + --resume, the authors' layout.

Audio: 12 procedural clips of 0.7 s written once per session; models are tiny (width 32, 1-2 blocks)
and clips 64 frames (8 x 4 = 32 patches).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dass.errors import ConfigError, DassError

torch.set_num_threads(1)
SR = 16000
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    from dass.audio import save_audio

    root = tmp_path_factory.mktemp("unlabelled")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(int(0.7 * SR)) / SR
    for i in range(12):
        f0 = rng.uniform(200, 3000)
        x = 0.3 * np.sin(2 * np.pi * (f0 * t + rng.uniform(-400, 400) * t**2)) + 0.03 * rng.normal(size=t.size)
        folder = root if i % 3 else root / "sub"
        save_audio(folder / f"clip_{i:02d}.{'wav' if i % 2 else 'flac'}", x.astype(np.float32), SR)
    (root / "notes.txt").write_text("not audio\n")
    return root


def base_config(audio_dir: Path, out: Path, **sections) -> dict:
    cfg = {
        "data": {"train": str(audio_dir), "max_length": 64, "valid_clips": 4},
        "model": {"name": "ssamba_nano", "args": {"embed_dim": 32, "depth": 2, "drop_path_rate": 0.0}},
        "optim": {"batch_size": 4, "epochs": 2, "lr": 1e-3, "warmup_steps": 2, "warmup_every": 1},
        "run": {
            "output_dir": str(out),
            "eval_every": 3,
            "checkpoint_every": 0,
            "log_every": 1,
            "progress": False,
            "eval_batch_size": 4,
        },
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# ------------------------------------------------------------------------------------------ masking


def test_one_cluster_is_a_square_that_wraps_into_the_next_row() -> None:
    from dass.pretrain.masking import cluster

    grid_t, patches = 10, 8 * 10  # 8 frequency rows of 10 time patches, id = f * 10 + t
    square = cluster(start=2 * 10 + 3, size=3, time_patches=grid_t, num_patches=patches)
    assert sorted((k // grid_t, k % grid_t) for k in square) == [(f, t) for f in (2, 3, 4) for t in (3, 4, 5)]
    # start at t = 8 of row 1: the columns 8, 9 stay in the row, "column 10" is column 0 of the next row
    wrapped = cluster(start=1 * 10 + 8, size=3, time_patches=grid_t, num_patches=patches)
    assert wrapped == [18, 19, 20, 28, 29, 30, 38, 39, 40]
    assert cluster(start=0, size=2, time_patches=grid_t, num_patches=patches) == [1, 10, 11]  # id 0 dropped
    assert cluster(start=75, size=3, time_patches=grid_t, num_patches=patches) == [75, 76, 77]  # cut at P


def _authors_rule(rng: np.random.Generator, patches: int, grid_t: int, m: int) -> list[int]:
    """The rule as the authors' code states it, written out with plain loops."""
    size = [3, 4, 5][int(rng.integers(3))]
    ids: list[int] = []
    while len(set(ids)) <= m:
        start = int(rng.integers(patches))
        for i in range(size):
            for j in range(size):
                candidate = start + grid_t * i + j
                if 0 < candidate < patches:
                    ids.append(candidate)
    return list(set(ids))[:m]


@pytest.mark.parametrize("grid,m", [((8, 64), 400), ((8, 64), 300), ((8, 12), 56), ((8, 4), 19), ((8, 6), 46)])
def test_cluster_mask_exactly_m_ids_never_patch_zero(grid: tuple[int, int], m: int) -> None:
    from dass.pretrain.masking import cluster, cluster_mask

    patches, grid_t = grid[0] * grid[1], grid[1]
    sizes_seen = set()
    ones = 0
    for seed in range(150):
        ids = cluster_mask(np.random.default_rng(seed), patches, grid_t, m)
        assert ids == _authors_rule(np.random.default_rng(seed), patches, grid_t, m)
        assert len(ids) == m == len(set(ids))
        assert 0 not in ids and all(0 < k < patches for k in ids)
        ones += 1 in ids
        # every id lies in a c x c block of one of the drawn starts
        rng = np.random.default_rng(seed)
        size = [3, 4, 5][int(rng.integers(3))]
        sizes_seen.add(size)
        covered: set[int] = set()
        while len(covered) <= m:
            covered.update(cluster(int(rng.integers(patches)), size, grid_t, patches))
        assert set(ids) <= covered
    assert sizes_seen == {3, 4, 5}
    assert ones > 0  # patch 1 is masked sometimes: only patch 0 is excluded


def test_cluster_mask_keeps_the_lowest_ids_and_checks_m() -> None:
    from dass.pretrain.masking import cluster_mask, random_mask, scaled_mask_count

    ids = cluster_mask(np.random.default_rng(3), 512, 64, 300)
    assert ids == sorted(ids)  # CPython's set order for small ints: ascending
    assert scaled_mask_count(400, 512) == 400 and scaled_mask_count(400, 96) == 75 and scaled_mask_count(300, 32) == 19
    assert scaled_mask_count(400, 4) == 2  # at most P - 2
    with pytest.raises(ConfigError, match=r"masked patches must be in \[1, 30\] for 32 patches"):
        cluster_mask(np.random.default_rng(0), 32, 4, 31)
    uniform = random_mask(np.random.default_rng(0), 32, 30)
    assert sorted(uniform) == list(range(1, 31)) or (len(set(uniform)) == 30 and 0 not in uniform)


# ------------------------------------------------------------------------------------ the objectives


def test_patch_targets_are_unfold_of_the_image() -> None:
    from dass.pretrain.losses import patch_targets

    features = torch.randn(2, 48, 32)  # (B, T, F): grid 2 x 3, frequency-major
    patches = patch_targets(features, 16)
    assert patches.shape == (2, 6, 256)
    for f in range(2):
        for t in range(3):
            block = features[:, 16 * t : 16 * t + 16, 16 * f : 16 * f + 16]  # (B, time, freq)
            want = block.transpose(1, 2).reshape(2, 256)  # frequency row by row, then time
            torch.testing.assert_close(patches[:, f * 3 + t], want, rtol=0, atol=0)


def _nce_by_hand(pred: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> tuple[float, float]:
    """-mean_a log(exp(S[a,a]) / sum_b exp(S[a,b])), S[a,b] = target_a . pred_b / tau; accuracy: per column b,
    is argmax over rows a of the row-softmaxed S equal to b?"""
    m = pred.shape[0]
    s = [[float(target[a] @ pred[b]) / temperature for b in range(m)] for a in range(m)]
    loss = -sum(s[a][a] - math.log(sum(math.exp(v) for v in s[a])) for a in range(m)) / m
    soft = [[math.exp(v) / sum(math.exp(w) for w in s[a]) for v in s[a]] for a in range(m)]
    correct = sum(max(range(m), key=lambda a: soft[a][b]) == b for b in range(m))
    return loss, correct / m


def test_masked_nce_and_accuracy_against_the_formula() -> None:
    from dass.pretrain.losses import masked_nce

    target = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0], [-1.0, 0.5]]]
    )  # (B=2, M=3, K=2)
    pred = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], [[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]])
    loss, accuracy = masked_nce(pred, target)
    by_hand = [_nce_by_hand(pred[i], target[i]) for i in range(2)]
    assert loss.item() == pytest.approx(sum(h[0] for h in by_hand) / 2, rel=1e-6)
    assert accuracy.item() == pytest.approx(sum(h[1] for h in by_hand) / 2, rel=1e-6)
    # clip 0 by hand: S = [[1,0,.5],[0,1,.5],[1,1,1]]; row softmax; column argmaxes 0, 1, 2 -> 3 correct.
    # clip 1: S = [[0,2,-2],[1,0,0],[.5,-1,1]] -> column 0: row 1, column 1: row 0, column 2: row 2 -> 1 of 3.
    assert accuracy.item() == pytest.approx((3 / 3 + 1 / 3) / 2)
    s0 = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [1.0, 1.0, 1.0]])
    s1 = torch.tensor([[0.0, 2.0, -2.0], [1.0, 0.0, 0.0], [0.5, -1.0, 1.0]])
    want = -(torch.log_softmax(s0, 1).diagonal().sum() + torch.log_softmax(s1, 1).diagonal().sum()) / 6
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    # temperature divides S; batch negatives pool the 6 masked patches of both clips
    loss_t, _ = masked_nce(pred, target, temperature=0.5)
    assert loss_t.item() == pytest.approx(sum(_nce_by_hand(pred[i], target[i], 0.5)[0] for i in range(2)) / 2, rel=1e-6)
    loss_b, acc_b = masked_nce(pred, target, negatives="batch")
    want_b = _nce_by_hand(pred.reshape(6, 2), target.reshape(6, 2))
    assert (loss_b.item(), acc_b.item()) == (pytest.approx(want_b[0], rel=1e-6), pytest.approx(want_b[1]))
    assert not accuracy.requires_grad
    with pytest.raises(ConfigError, match="negatives must be one of clip, batch"):
        masked_nce(pred, target, negatives="world")


def test_masked_mse_and_random_nce_against_float64_loops() -> None:
    from dass.pretrain.losses import masked_mse, masked_nce

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 7, 5, generator=g), torch.randn(3, 7, 5, generator=g)
    want = (
        sum(float((pred[b, m, k] - target[b, m, k]) ** 2) for b in range(3) for m in range(7) for k in range(5)) / 105
    )
    assert masked_mse(pred, target).item() == pytest.approx(want, rel=1e-6)
    loss, acc = masked_nce(pred, target)
    by_hand = [_nce_by_hand(pred[i].double(), target[i].double()) for i in range(3)]
    assert loss.item() == pytest.approx(sum(h[0] for h in by_hand) / 3, rel=1e-5)
    assert acc.item() == pytest.approx(sum(h[1] for h in by_hand) / 3)


@pytest.mark.parametrize(
    "name,args",
    [("ssamba_nano", {"embed_dim": 32, "depth": 2}), ("ssast_nano", {"embed_dim": 32, "depth": 1, "num_heads": 2})],
)
def test_masked_pass_replaces_masked_embeddings_and_predicts_at_the_masked_tokens(name, args) -> None:
    from dass.models.registry import create_model
    from dass.pretrain.losses import masked_mse, masked_nce, patch_targets
    from dass.pretrain.model import MaskedPatchModel

    torch.manual_seed(0)
    encoder = create_model(name, num_classes=1, fstride=16, tstride=16, input_tdim=64, **args)
    model = MaskedPatchModel(encoder).eval()
    assert not any(p.requires_grad for p in encoder.mlp_head.parameters())
    features = torch.randn(2, 64, 128)
    ids = torch.tensor([[1, 5, 9, 30], [2, 3, 17, 31]])
    seen = {}
    original = encoder.forward_tokens

    def spy(patches, time_patches):
        seen["patches"], seen["time"] = patches.detach().clone(), time_patches
        out = original(patches, time_patches)
        seen["tokens"] = out.detach().clone()
        return out

    encoder.forward_tokens = spy
    with torch.no_grad():
        nce, acc = model.mpc(features, ids)
    embedded = encoder.patch_embed(features.unsqueeze(1).transpose(2, 3))
    assert seen["time"] == 4 and seen["patches"].shape == (2, 32, 32)
    for b in range(2):
        for k in range(32):
            want = model.mask_embed[0, 0] if k in ids[b] else embedded[b, k]
            torch.testing.assert_close(seen["patches"][b, k], want.detach())
    prefix = encoder.num_prefix_tokens
    outputs = torch.stack([seen["tokens"][b, prefix + ids[b]] for b in range(2)])
    targets = torch.stack([patch_targets(features)[b, ids[b]] for b in range(2)])
    with torch.no_grad():
        want_nce, want_acc = masked_nce(model.cpredlayer(outputs), targets)
        want_mse = masked_mse(model.gpredlayer(outputs), targets)
        assert nce.item() == pytest.approx(want_nce.item(), rel=1e-5) and acc.item() == want_acc.item()
        mse = model.mpg(features, ids)
    assert mse.item() == pytest.approx(want_mse.item(), rel=1e-5)
    with torch.no_grad():
        joint = model(features, ids, ids)
    assert joint["loss"].item() == pytest.approx(nce.item() + 10 * mse.item(), rel=1e-5)


def test_overlapping_patches_and_non_patch_encoders_are_refused() -> None:
    from dass.models.registry import create_model
    from dass.pretrain.model import MaskedPatchModel

    with pytest.raises(ConfigError, match="strides must equal the patch size 16, got fstride=10 tstride=10"):
        MaskedPatchModel(create_model("ssamba_nano", embed_dim=32, depth=2, num_classes=1))
    with pytest.raises(ConfigError, match="needs a patch encoder .* dass is not one"):
        MaskedPatchModel(create_model("dass_tiny", dims=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_classes=1))


# ------------------------------------------------------------------------------------- schedule


def test_warmup_rule_and_plateau_match_pytorch() -> None:
    from dass.pretrain.config import PretrainOptimConfig
    from dass.pretrain.loop import Plateau, pretrain_lr

    cfg = PretrainOptimConfig(lr=1e-4, warmup_steps=1000, warmup_every=50)
    # the authors': at every 50th step s <= 1000, lr = s / 1000 * 1e-4; kept in between; step 0 at lr 0
    assert pretrain_lr(cfg, 0) == 0.0 and pretrain_lr(cfg, 49) == 0.0
    assert pretrain_lr(cfg, 50) == pytest.approx(5e-6) and pretrain_lr(cfg, 99) == pytest.approx(5e-6)
    assert pretrain_lr(cfg, 1000) == pytest.approx(1e-4) and pretrain_lr(cfg, 5000, 0.25) == pytest.approx(2.5e-5)
    assert pretrain_lr(PretrainOptimConfig(lr=1.0, warmup_steps=0), 0) == 1.0
    values = [0.1, 0.2, 0.2, 0.19, 0.2, 0.25, 0.25, 0.25, 0.25, 0.2, 0.1, 0.1, 0.1, 0.3]
    ours = Plateau(0.5, 2)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    for v in values:
        reference.step(v)
        assert ours.step(v) == pytest.approx(optimizer.param_groups[0]["lr"])
    assert ours.scale < 1.0


# ------------------------------------------------------------------------------------- data + config


def test_unlabelled_sources_directory_list_and_datafile(audio_dir: Path, tmp_path: Path) -> None:
    from dass.data.unlabelled import UnlabelledAudio, list_audio_files, split_files
    from dass.features import FeatureExtractor

    files = list_audio_files(audio_dir)
    assert len(files) == 12 and all(os.path.isabs(f) for f in files) and not any(f.endswith(".txt") for f in files)
    listing = tmp_path / "list.txt"
    listing.write_text("# my clips\n" + "\n".join(os.path.relpath(f, tmp_path) for f in files) + "\n\n")
    assert list_audio_files(listing) == files
    datafile = tmp_path / "data.json"
    datafile.write_text(json.dumps({"data": [{"wav": f, "labels": "/m/x"} for f in files]}))
    assert list_audio_files(datafile) == files
    kept, held = split_files(files, 4)
    assert len(held) == 4 and sorted(kept + held) == sorted(files) and split_files(files, 4) == (kept, held)
    ds = UnlabelledAudio(files, max_length=64)
    item = ds[(0, 123)]
    want = FeatureExtractor(max_length=64).from_file(files[0])[0]
    torch.testing.assert_close(item["features"], want)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DassError, match="empty: no audio files below this directory"):
        list_audio_files(tmp_path / "empty")
    listing.write_text("missing.wav\n")
    with pytest.raises(DassError, match=r"list.txt: entry 0: audio file not found: .*missing.wav"):
        list_audio_files(listing)
    with pytest.raises(DassError, match="nowhere: no such directory, file list or datafile"):
        list_audio_files(tmp_path / "nowhere")


def test_pretrain_config_overrides_and_errors(tmp_path: Path) -> None:
    from dass.pretrain.config import load_pretrain_config

    recipe = tmp_path / "p.yaml"
    recipe.write_text("data: {train: audio/}\nmasking: {num_masked: 40}\n")
    cfg = load_pretrain_config(recipe, ["objective.temperature=0.1", "model.args.depth=4", "optim.lr=3e-4"])
    assert (cfg.masking.num_masked, cfg.objective.temperature, cfg.model.args, cfg.optim.lr) == (
        40,
        0.1,
        {"depth": 4},
        3e-4,
    )
    assert (cfg.optim.weight_decay, cfg.optim.betas, cfg.objective.mse_weight) == (5e-8, [0.95, 0.999], 10.0)
    with pytest.raises(ConfigError, match=r"unknown config key 'masking.m'; valid keys: masking.num_masked"):
        load_pretrain_config(recipe, ["masking.m=3"])
    with pytest.raises(ConfigError, match="objective.negatives must be one of clip, batch, got 'all'"):
        load_pretrain_config(recipe, ["objective.negatives=all"])
    with pytest.raises(ConfigError, match=r"data.train must be set"):
        load_pretrain_config(None)


# ------------------------------------------------------------------------------------------ runs


def _pretrain_in_subprocess(cfg: dict, resume: bool = False, kill_after_step: int = 0) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import json, os, signal, torch
        torch.set_num_threads(1)
        from dass.pretrain.config import PretrainConfig
        from dass.train.config import config_from_dict
        from dass.pretrain.loop import pretrain
        def kill(step):
            if step == {kill_after_step}:
                os.kill(os.getpid(), signal.SIGKILL)
        cfg = config_from_dict(json.loads({json.dumps(json.dumps(cfg))}), PretrainConfig)
        pretrain(cfg, resume={resume}, step_callback=kill)
    """)
    return subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=600)


def test_pretraining_run_writes_logs_checkpoints_and_learns(audio_dir: Path, tmp_path: Path) -> None:
    from dass.checkpoints import from_pretrained
    from dass.pretrain.checkpoint import load_ssl
    from dass.pretrain.config import PretrainConfig
    from dass.pretrain.loop import pretrain
    from dass.train.config import config_from_dict

    out = tmp_path / "run"
    cfg = base_config(
        audio_dir,
        out,
        optim={"epochs": 6},
        run={"eval_every": 4, "log_every": 2},
        model={"name": "ssast_nano", "args": {"embed_dim": 32, "depth": 1, "num_heads": 2}},
    )
    result = pretrain(config_from_dict(cfg, PretrainConfig))
    assert result["global_steps"] == 12 and result["num_masked"] == 19 and result["valid_masked"] == 25
    assert result["patches"] == 32 and (result["train_clips"], result["valid_clips"]) == (8, 4)
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,epoch,lr,loss,nce,mse,accuracy" and len(log) == 7
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("step,epoch,valid_accuracy,valid_nce,valid_mse") and len(metrics) == 4  # 4, 8, 12
    first, last = (dict(zip(log[0].split(","), map(float, row.split(",")))) for row in (log[1], log[-1]))
    assert last["loss"] < first["loss"]  # 12 steps at lr 1e-3 lower the joint loss
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    encoder = from_pretrained(out / "final")
    assert encoder.config.fstride == encoder.config.tstride == 16 and encoder.config.input_tdim == 64
    ssl = load_ssl(out / "final")
    state = torch.load(out / "checkpoints/last.pt", weights_only=True)["model"]
    for k, v in ssl.state_dict().items():
        torch.testing.assert_close(v, state[k])
    with pytest.raises(DassError, match="already holds a pretraining checkpoint; pass --resume"):
        pretrain(config_from_dict(cfg, PretrainConfig))


def test_torchrun_two_processes_equal_one(audio_dir: Path, tmp_path: Path) -> None:
    import yaml

    one = _pretrain_in_subprocess(base_config(audio_dir, tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    recipe = tmp_path / "two.yaml"
    recipe.write_text(yaml.safe_dump(base_config(audio_dir, tmp_path / "two")))
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "dass.cli",
            "pretrain",
            str(recipe),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    # The NCE of each target row is invariant to a shift shared by all the clip's predictions, so
    # cpredlayer.2.bias, and cpredlayer.0.bias at hidden units active for every masked patch, have no
    # true gradient; Adam turns their float-noise gradients into +-lr steps that differ between the two
    # layouts (and change nothing else). They get a bound of lr x steps; everything else 1e-5.
    heads_one, heads_two = (weights(tmp_path / d / "final/ssl_heads.safetensors") for d in ("one", "two"))
    for key in ("cpredlayer.0.bias", "cpredlayer.2.bias"):
        assert (heads_one.pop(key) - heads_two.pop(key)).abs().max().item() <= 1e-3 * 6
    assert max_difference(heads_one, heads_two) < 1e-5
    assert (
        max_difference(
            weights(tmp_path / "one/final/model.safetensors"), weights(tmp_path / "two/final/model.safetensors")
        )
        < 1e-5
    )
    a, b = (json.loads((tmp_path / d / "final_metrics.json").read_text()) for d in ("one", "two"))
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert b["valid_accuracy"] == pytest.approx(a["valid_accuracy"], abs=1e-6)
    assert b["valid_nce"] == pytest.approx(a["valid_nce"], rel=1e-4)
    rows_a, rows_b = ((tmp_path / d / "train_log.csv").read_text().splitlines() for d in ("one", "two"))
    assert len(rows_a) == len(rows_b) == 5


def test_sigkill_and_resume_equals_uninterrupted(audio_dir: Path, tmp_path: Path) -> None:
    # drop-path on: the torch RNG must resume too; the plateau and the evaluations sit in the checkpoint
    overrides = dict(
        optim={"epochs": 3},
        run={"checkpoint_every": 2, "eval_every": 3},
        model={"name": "ssamba_nano", "args": {"embed_dim": 32, "depth": 2, "drop_path_rate": 0.1}},
    )
    full = _pretrain_in_subprocess(base_config(audio_dir, tmp_path / "full", **overrides))
    assert full.returncode == 0, full.stderr[-3000:]
    cfg = base_config(audio_dir, tmp_path / "killed", **overrides)
    killed = _pretrain_in_subprocess(cfg, kill_after_step=5)  # last checkpoint: step 4
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = torch.load(tmp_path / "killed/checkpoints/last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 0, 4)
    assert not (tmp_path / "killed/final").exists()
    resumed = _pretrain_in_subprocess(cfg, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for part in ("model.safetensors", "ssl_heads.safetensors"):
        assert max_difference(weights(tmp_path / "full/final" / part), weights(tmp_path / "killed/final" / part)) == 0.0
    for name in ("train_log.csv", "metrics.csv"):
        full_rows = [
            r.split(",")[:-1] if name == "metrics.csv" else r
            for r in (tmp_path / "full" / name).read_text().splitlines()
        ]
        killed_rows = [
            r.split(",")[:-1] if name == "metrics.csv" else r
            for r in (tmp_path / "killed" / name).read_text().splitlines()
        ]
        assert full_rows == killed_rows  # (metrics.csv without the train_seconds column)


def test_export_to_the_authors_layout_and_back_is_identical(audio_dir: Path, tmp_path: Path) -> None:
    from dass.cli import main
    from dass.models.ssamba import config_and_state_from_authors
    from dass.pretrain.checkpoint import export_authors, load_ssl, save_ssl
    from dass.pretrain.config import PretrainConfig
    from dass.pretrain.loop import build_model
    from dass.train.config import config_from_dict

    torch.manual_seed(3)
    model = build_model(config_from_dict(base_config(audio_dir, tmp_path / "x"), PretrainConfig))
    with torch.no_grad():  # make every tensor distinct from a fresh init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_ssl(model, tmp_path / "ours")
    assert main(["pretrain-convert", str(tmp_path / "ours"), str(tmp_path / "theirs.pth")]) == 0
    theirs = torch.load(tmp_path / "theirs.pth", weights_only=True)
    assert all(k.startswith("module.") for k in theirs)
    assert list(theirs)[:3] == ["module.p_input_fdim", "module.p_input_tdim", "module.mask_embed"]
    assert (theirs["module.p_input_fdim"].item(), theirs["module.p_input_tdim"].item()) == (128, 64)
    assert theirs["module.v.pos_embed"].shape == (1, 1 + 32, 32) and "module.cpredlayer.2.weight" in theirs
    torch.testing.assert_close(theirs["module.mask_embed"], model.mask_embed.detach(), rtol=0, atol=0)
    torch.testing.assert_close(
        theirs["module.gpredlayer.0.weight"], model.gpredlayer[0].weight.detach(), rtol=0, atol=0
    )
    assert main(["pretrain-convert", str(tmp_path / "theirs.pth"), str(tmp_path / "back")]) == 0
    back = load_ssl(tmp_path / "back")
    original = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.mlp_head.")}
    returned = {k: v for k, v in back.state_dict().items() if not k.startswith("encoder.mlp_head.")}
    assert max_difference(original, returned) == 0.0
    # the authors' fine-tuning conversion reads our export (their code reads the same keys)
    config, state = config_and_state_from_authors(theirs, input_tdim=128, num_classes=5)
    assert config.grid == (12, 12) and state["pos_embed"].shape == (1, 1 + 12 * 12, 32)
    ast_model = build_model(
        config_from_dict(
            base_config(
                audio_dir,
                tmp_path / "y",
                model={"name": "ssast_nano", "args": {"embed_dim": 32, "depth": 1, "num_heads": 2}},
            ),
            PretrainConfig,
        )
    )
    save_ssl(ast_model, tmp_path / "ast")
    with pytest.raises(DassError, match="SSAMBA encoders only; this one is ast"):
        export_authors(tmp_path / "ast", tmp_path / "ast.pth")
