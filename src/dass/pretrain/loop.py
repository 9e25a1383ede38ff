"""The pretraining loop (``dass pretrain``): SSAMBA's / SSAST's joint masked-patch recipe.

``pretrain(config)`` runs in one process or, under ``torchrun``, data-parallel (DDP: gloo on CPU,
nccl on GPU, :mod:`dass.train.distributed`). Per step: this process's slice of the global batch,
each clip with two masks drawn independently (cluster masking, :mod:`.masking`) -> the two masked
passes -> ``NCE + 10·MSE`` -> AdamW step. Every ``run.eval_every`` steps and at the end: the masked
accuracy / NCE / MSE of the held-out set with the validation mask count (400 of 512 patches,
scaled), which drives the plateau schedule and picks ``best/``.

Learning rate at 0-based global step s: ``lr · warm(s) · plateau``, with the authors' warm-up
``warm(s) = min(1, (s // warmup_every · warmup_every) / warmup_steps)`` (set every 50th step; step 0
runs at lr 0) and ``plateau`` halved (``plateau_factor``) when the validation accuracy has not
improved (relative threshold 1e-4) for more than ``plateau_patience`` evaluations (PyTorch's
ReduceLROnPlateau, mode max).

Output folder::

    config.yaml              the resolved configuration
    checkpoints/last.pt      training state (model + heads, optimizer, plateau, scaler, position, logs)
    train_log.csv            every run.log_every steps: step, epoch, lr, loss, nce, mse, accuracy (means)
    metrics.csv              every evaluation: step, valid_accuracy, valid_nce, valid_mse, lr, seconds
    tensorboard/             the same as TensorBoard scalars
    best/, final/            self-supervised checkpoints (:func:`dass.pretrain.checkpoint.save_ssl`)
    final_metrics.json       the last evaluation, cost, sizes

Determinism: data order and masks depend only on (seed, epoch, position) (masks are drawn from the
item's generator), validation masks only on the clip, and the torch RNG (drop-path) is re-seeded from
(seed, step, rank) before every step, so a resumed run repeats the interrupted one and N processes
with batch b/N reproduce one process with batch b (up to float summation order; with drop-path > 0
the masks of the stochastic depth differ between the two layouts).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.unlabelled import UnlabelledAudio, list_audio_files, split_files
from ..errors import ConfigError, DassError
from ..train.distributed import DistInfo, EpochSampler, ShardSampler, barrier, init_distributed
from ..train.trainer import _atomic_bytes, _device, _save_torch, _write_csv
from .checkpoint import save_ssl
from .config import PretrainConfig, PretrainOptimConfig
from .masking import draw_mask, scaled_mask_count
from .model import MaskedPatchModel

__all__ = ["Plateau", "build_model", "evaluate", "mask_counts", "pretrain", "pretrain_lr"]

CHECKPOINT = "checkpoints/last.pt"
TRAIN_MASKED_FOR_512 = 300  # the released recipe's M (of 512 patches)
VALID_MASKED_FOR_512 = 400  # its validation M
VALID_MASK_SEED = 20_240_521  # validation masks depend on the clip only


def pretrain_lr(cfg: PretrainOptimConfig, step: int, plateau_scale: float = 1.0) -> float:
    """Learning rate at 0-based global ``step`` (see the module docstring)."""
    warm = 1.0
    if cfg.warmup_steps > 0:
        warm = min(1.0, (step // cfg.warmup_every * cfg.warmup_every) / cfg.warmup_steps)
    return cfg.lr * warm * plateau_scale


class Plateau:
    """ReduceLROnPlateau (mode max, relative threshold 1e-4, no cooldown) as a factor on the learning rate."""

    def __init__(self, factor: float = 0.5, patience: int = 2, threshold: float = 1e-4) -> None:
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.scale, self.best, self.bad = 1.0, -math.inf, 0

    def step(self, value: float) -> float:
        """Record one evaluation; returns the (possibly reduced) scale."""
        if value > self.best * (1 + self.threshold):  # -inf at first: any value is better
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale *= self.factor
                self.bad = 0
        return self.scale

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale, self.best, self.bad = float(state["scale"]), float(state["best"]), int(state["bad"])


def build_model(config: PretrainConfig) -> MaskedPatchModel:
    """The encoder of ``model.name`` at the pretraining geometry (strides = patch size, ``input_tdim`` =
    ``data.max_length``) wrapped in a :class:`MaskedPatchModel`."""
    from ..models.registry import create_model

    args = dict(config.model.args)
    patch = int(args.get("patch_size", 16))
    for key, value in (
        ("fstride", patch),
        ("tstride", patch),
        ("input_tdim", config.data.max_length),
        ("num_classes", 1),
    ):
        args.setdefault(key, value)
    encoder = create_model(config.model.name, **args)
    o = config.objective
    return MaskedPatchModel(
        encoder, objective=o.kind, mse_weight=o.mse_weight, temperature=o.temperature, negatives=o.negatives
    )


def mask_counts(config: PretrainConfig, num_patches: int) -> tuple[int, int]:
    """(training M, validation M) for clips of ``num_patches`` patches."""
    m = config.masking
    train = m.num_masked if m.num_masked is not None else scaled_mask_count(TRAIN_MASKED_FOR_512, num_patches)
    valid = m.valid_masked if m.valid_masked is not None else scaled_mask_count(VALID_MASKED_FOR_512, num_patches)
    for name, value in (("masking.num_masked", train), ("masking.valid_masked", valid)):
        if not 1 <= value <= num_patches - 2:
            raise ConfigError(
                f"{name} = {value} does not fit clips of {num_patches} patches (at most {num_patches - 2})"
            )
    return train, valid


def _mask_transform(config: PretrainConfig, grid: tuple[int, int], count: int) -> Callable:
    num_patches, time_patches = grid[0] * grid[1], grid[1]
    m = config.masking

    def transform(features: torch.Tensor, rng: np.random.Generator, index: int) -> dict[str, torch.Tensor]:
        """Two independent masks per clip: ``mask_c`` (discriminative pass), ``mask_g`` (generative pass)."""
        masks = [
            draw_mask(rng, num_patches, time_patches, count, clustered=m.cluster, cluster_sizes=m.cluster_sizes)
            for _ in range(2)
        ]
        return {"mask_c": masks[0], "mask_g": masks[1]}

    return transform


@torch.no_grad()
def evaluate(model: MaskedPatchModel, loader: Any, device: torch.device, info: DistInfo, amp: bool) -> dict[str, float]:
    """Masked accuracy, NCE and MSE over the held-out clips (means over clips; every rank gets them)."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # accuracy, nce, mse (each times clips), clips
    for batch in loader:
        features = batch["features"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            out = model(features, batch["mask_c"].to(device), batch["mask_g"].to(device))
        n = features.shape[0]
        totals += torch.tensor(
            [out["accuracy"].item() * n, out["nce"].item() * n, out["mse"].item() * n, n], dtype=torch.float64
        )
    if info.enabled:
        torch.distributed.all_reduce(totals)
    clips = max(1.0, totals[3].item())
    return {
        "valid_accuracy": totals[0].item() / clips,
        "valid_nce": totals[1].item() / clips,
        "valid_mse": totals[2].item() / clips,
    }


def _data(config: PretrainConfig, model: MaskedPatchModel) -> tuple[UnlabelledAudio, UnlabelledAudio, dict[str, int]]:
    d = config.data
    files = list_audio_files(d.train)
    if d.valid:
        valid_files = list_audio_files(d.valid)
    else:
        files, valid_files = split_files(files, d.valid_clips)
    grid = model.grid(d.max_length)
    train_m, valid_m = mask_counts(config, grid[0] * grid[1])
    common = dict(
        max_length=d.max_length,
        num_mel_bins=model.encoder.config.input_fdim,
        cache_dir=d.cache_dir,
        mean=d.mean,
        std=d.std,
    )
    train_set = UnlabelledAudio(files, item_transform=_mask_transform(config, grid, train_m), **common)
    valid_set = UnlabelledAudio(valid_files, item_transform=_mask_transform(config, grid, valid_m), **common)
    sizes = {
        "train_clips": len(files),
        "valid_clips": len(valid_files),
        "patches": grid[0] * grid[1],
        "grid": list(grid),
        "num_masked": train_m,
        "valid_masked": valid_m,
    }
    return train_set, valid_set, sizes


def pretrain(
    config: PretrainConfig, resume: bool = False, step_callback: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) pretraining as configured; returns the final metrics (on rank 0; ``{}`` elsewhere).

    ``step_callback(global_step)`` is called after every optimizer step (and its checkpoint).
    """
    config.validate()
    device_type = (
        "cuda" if config.run.device == "cuda" or (config.run.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    info = init_distributed(device_type)
    device = _device(config, info)
    out = Path(config.run.output_dir)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise DassError(
            f"{out} already holds a pretraining checkpoint; pass --resume to continue it or choose another "
            "run.output_dir"
        )
    if resume and not ckpt_path.exists():
        raise DassError(f"--resume: no checkpoint at {ckpt_path}")
    o, r = config.optim, config.run
    if o.batch_size % info.world_size:
        raise ConfigError(f"optim.batch_size {o.batch_size} (global) is not divisible by {info.world_size} processes")
    local_batch = o.batch_size // info.world_size
    amp = o.amp and device.type == "cuda"

    torch.manual_seed(r.seed)
    model = build_model(config).to(device)
    train_set, valid_set, sizes = _data(config, model)
    sampler = EpochSampler(
        len(train_set), local_batch, info.rank, info.world_size, r.seed, None, config.data.samples_per_epoch
    )
    if sampler.steps_per_epoch == 0:
        raise ConfigError(f"{config.data.train}: {len(train_set)} clips are fewer than one batch of {o.batch_size}")
    loader_kw = dict(num_workers=config.data.num_workers, pin_memory=device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=local_batch, sampler=sampler, **loader_kw)
    shard = ShardSampler(len(valid_set), info.rank, info.world_size).indices
    valid_items = [(i, int(np.random.SeedSequence([VALID_MASK_SEED, i]).generate_state(1)[0])) for i in shard]
    valid_loader = torch.utils.data.DataLoader(
        valid_set, batch_size=r.eval_batch_size, sampler=valid_items, **loader_kw
    )

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, foreach=True)
    plateau = Plateau(o.plateau_factor, o.plateau_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    epoch, step_in_epoch, global_step, train_seconds = 0, 0, 0, 0.0
    history: list[dict[str, Any]] = []  # evaluations
    log_rows: list[dict[str, Any]] = []  # training means every log_every steps
    # this process's sums of loss, nce, mse, accuracy, and its steps, since the last log row
    window = torch.zeros(5, dtype=torch.float64)
    best_accuracy = -math.inf
    if resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        plateau.load_state_dict(state["plateau"])
        scaler.load_state_dict(state["scaler"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        history, log_rows = list(state["history"]), list(state["log_rows"])
        train_seconds, best_accuracy = float(state["train_seconds"]), float(state["best_accuracy"])
        if info.is_main:  # the stored sums cover all processes; the others restart from 0
            window = torch.tensor(state["window"], dtype=torch.float64)
    ddp_model: nn.Module = model
    if info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    writer = None
    if info.is_main:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        out.mkdir(parents=True, exist_ok=True)
        _atomic_bytes(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
        writer = SummaryWriter(str(out / "tensorboard"), purge_step=global_step if resume else None)
        print(
            f"pretraining {config.model.name} ({sum(p.numel() for p in model.encoder.parameters()):,} encoder "
            f"parameters) on {sizes['train_clips']} clips ({sizes['valid_clips']} held out), {sizes['patches']} "
            f"patches per clip, M = {sizes['num_masked']} (validation {sizes['valid_masked']}), "
            f"{info.world_size} process(es), {device}",
            flush=True,
        )

    def all_summed(values: torch.Tensor) -> torch.Tensor:
        values = values.clone()
        if info.enabled:
            torch.distributed.all_reduce(values)
        return values

    def save_checkpoint() -> None:
        totals = all_summed(window)
        if info.is_main:
            _save_torch(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "plateau": plateau.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "step_in_epoch": step_in_epoch,
                    "global_step": global_step,
                    "history": history,
                    "log_rows": log_rows,
                    "window": totals.tolist(),
                    "train_seconds": train_seconds,
                    "best_accuracy": best_accuracy,
                    "world_size": info.world_size,
                },
            )
        barrier(info)

    def run_evaluation() -> dict[str, Any]:
        nonlocal best_accuracy
        metrics = evaluate(model, valid_loader, device, info, amp)
        plateau.step(metrics["valid_accuracy"])
        row = {
            "step": global_step,
            "epoch": epoch + 1,
            **metrics,
            "lr_scale": plateau.scale,
            "train_seconds": round(train_seconds, 3),
        }
        if info.is_main:
            history.append(row)
            _write_csv(out / "metrics.csv", history)
            for k, v in metrics.items():
                writer.add_scalar(f"valid/{k.removeprefix('valid_')}", v, global_step)
            writer.flush()
            if metrics["valid_accuracy"] > best_accuracy:
                save_ssl(model, out / "best")
            print(
                f"step {global_step}: valid masked accuracy {metrics['valid_accuracy']:.4f}  NCE "
                f"{metrics['valid_nce']:.4f}  MSE {metrics['valid_mse']:.4f}  ({train_seconds:.0f} s)",
                flush=True,
            )
        best_accuracy = max(best_accuracy, metrics["valid_accuracy"])
        barrier(info)
        return row

    from tqdm import tqdm

    total_steps = o.epochs * sampler.steps_per_epoch
    last_eval_step = history[-1]["step"] if history else -1
    while epoch < o.epochs:
        sampler.set_epoch(epoch, step_in_epoch)
        bar = tqdm(
            total=sampler.steps_per_epoch,
            initial=step_in_epoch,
            desc=f"epoch {epoch + 1}/{o.epochs}",
            disable=not (info.is_main and r.progress),
            leave=False,
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        for batch in train_loader:
            ddp_model.train()
            torch.manual_seed(r.seed * 1_000_003 + global_step * info.world_size + info.rank)
            lr = pretrain_lr(o, global_step, plateau.scale)
            for group in optimizer.param_groups:
                group["lr"] = lr
            features = batch["features"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                result = ddp_model(features, batch["mask_c"].to(device), batch["mask_g"].to(device))
            loss = result["loss"].float()
            if not torch.isfinite(loss):
                raise DassError(f"loss is {loss.item()} at step {global_step} (epoch {epoch + 1}); lower optim.lr?")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            global_step += 1
            step_in_epoch += 1
            window += torch.tensor(
                [loss.item(), result["nce"].item(), result["mse"].item(), result["accuracy"].item(), 1.0],
                dtype=torch.float64,
            )
            bar.update(1)
            bar.set_postfix(
                nce=f"{result['nce'].item():.3f}",
                mse=f"{result['mse'].item():.3f}",
                acc=f"{result['accuracy'].item():.3f}",
                lr=f"{lr:.2e}",
            )
            if global_step % max(1, r.log_every) == 0:
                totals = all_summed(window)
                window.zero_()
                if info.is_main:
                    n = max(1.0, totals[4].item())
                    row = {
                        "step": global_step,
                        "epoch": epoch + 1,
                        "lr": lr,
                        "loss": totals[0].item() / n,
                        "nce": totals[1].item() / n,
                        "mse": totals[2].item() / n,
                        "accuracy": totals[3].item() / n,
                    }
                    log_rows.append(row)
                    _write_csv(out / "train_log.csv", log_rows)
                    for k in ("loss", "nce", "mse", "accuracy", "lr"):
                        writer.add_scalar(f"train/{k}", row[k], global_step)
            evaluated = r.eval_every > 0 and global_step % r.eval_every == 0
            if evaluated:
                train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                run_evaluation()
                last_eval_step = global_step
            if evaluated or (r.checkpoint_every > 0 and global_step % r.checkpoint_every == 0):
                train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                save_checkpoint()
            if step_callback is not None:
                step_callback(global_step)
        bar.close()
        train_seconds += time.perf_counter() - started
        epoch, step_in_epoch = epoch + 1, 0
        save_checkpoint()

    final = history[-1] if last_eval_step == global_step and history else run_evaluation()
    result: dict[str, Any] = {}
    if info.is_main:
        save_ssl(model, out / "final")
        result = {
            **{k: final[k] for k in ("valid_accuracy", "valid_nce", "valid_mse")},
            "best_valid_accuracy": best_accuracy,
            "global_steps": global_step,
            "total_steps": total_steps,
            "epochs": o.epochs,
            "train_seconds": round(train_seconds, 3),
            "world_size": info.world_size,
            "device": str(device),
            "model": config.model.name,
            "encoder_parameters": sum(
                p.numel() for n, p in model.encoder.named_parameters() if not n.startswith("mlp_head.")
            ),
            **sizes,
        }
        _atomic_bytes(out / "final_metrics.json", (json.dumps(result, indent=2) + "\n").encode())
        writer.close()
        print(
            f"final: valid masked accuracy {final['valid_accuracy']:.4f} (best {best_accuracy:.4f}) -> {out / 'final'}",
            flush=True,
        )
    barrier(info)
    return result
