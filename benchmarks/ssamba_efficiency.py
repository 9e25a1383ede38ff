"""SSAMBA-tiny vs SSAST-tiny: seconds and peak memory of one forward call against the number of patches.

The SSAMBA paper (arXiv 2405.11831) reports, on a GPU at about 22k patches, SSAMBA-tiny 13.7x faster
(92.7 %) and 21.7x less memory (95.4 %) than SSAST-tiny; this is the same measurement on the CPU.

Models (random weights; the weights do not change the cost): ``ssamba_tiny`` and ``ssast_tiny`` with
16x16 patches at stride 16 (so ``patches = 8 * frames / 16``), mean pooling over the patch tokens,
527 classes, float32, ``torch.no_grad()``; SSAST twice, with ``attention="sdpa"``
(``F.scaled_dot_product_attention``) and ``attention="eager"`` (the materialised softmax matrix,
as timm's ViT, which the authors ran). Inputs longer than the models' 1024-frame position tables
get the table resized along time inside the forward (docs/ssamba.md), part of the measured call.

Sizes: 512, 2048, 8192, 16384 and 22528 patches for all three, SSAMBA further to 32768, 51200 and
75264 patches. Batch 4, or batch 1 at a size where the estimated peak of any model at batch 4
exceeds ``--memory-limit-gb`` (20); a model whose batch-1 estimate is over the limit is skipped
with a note. Each size is measured in ``--rounds`` interleaved rounds (one call of each model per
round, the order rotated), all in one process; the time is the median.

Memory is measured once per model and size, in a separate untimed call, as the peak of **tracked
tensor allocations**: a ``TorchDispatchMode`` adds the bytes of every storage an operator creates
and subtracts them when the storage is freed, so the figure is the largest total of activations
(and outputs) alive at once during the call. It excludes, for every model alike, the weights and
the input, which are allocated before the call (the ``weights+input GB`` column gives them; their
sum is comparable with ``torch.cuda.max_memory_allocated`` as the authors measured), and the
scratch memory kernels allocate internally (small: SDPA's per-thread blocks). The same call also
records the peak RSS above the RSS before the call (``rss GB``, a cross-check; glibc's reuse of freed
memory makes it an underestimate). The memory call doubles as the warm-up of that size.

    python3 benchmarks/ssamba_efficiency.py                 # results/ssamba_efficiency.{txt,png}
    python3 benchmarks/ssamba_efficiency.py --quick         # small sizes, a few seconds, prints only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import weakref

import torch
from _common import write_table
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

PATCHES = [512, 2048, 8192, 16384, 22528]
SSAMBA_ONLY_PATCHES = [32768, 51200, 75264]
QUICK_PATCHES = [128, 512, 1024]
QUICK_SSAMBA_ONLY_PATCHES = [2048]
HEADLINE_PATCHES = 22528  # "22k input tokens"
GB = 1e9

SSAMBA, SDPA, EAGER = "SSAMBA-tiny", "SSAST-tiny sdpa", "SSAST-tiny eager"


# ------------------------------------------------------------------------------------------- memory


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of the tensor storages created by operators while the mode is active.

    A storage is counted once (views and in-place results share it) from the operator that creates
    it until it is freed (a finalizer on its Python object, which torch keeps for the storage's life).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu" and not leaf.is_sparse:
                storage = leaf.untyped_storage()
                key = storage._cdata
                if key not in self._sizes and storage.nbytes() > 0:
                    self._sizes[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key)
        return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM (the peak RSS) to the current RSS
        return True
    except OSError:
        return False


def measure_memory(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int | None]:
    """(peak tracked tensor bytes, peak RSS bytes above the RSS before the call or None)."""
    rss_ok = _reset_peak_rss()
    before = _status_kb("VmRSS")
    tracker = TensorMemoryTracker()
    with torch.no_grad(), tracker:
        model(x)
    rss = (_status_kb("VmHWM") - before) * 1024 if rss_ok else None
    return tracker.peak, rss


def estimate_bytes(name: str, batch: int, tokens: int, dim: int = 192, heads: int = 3) -> float:
    """Rough peak activation bytes (upper bounds calibrated on tracked measurements) for the skip rule."""
    if name == SSAMBA:  # measured ~42 D-wide float32 rows per token: a mixer's buffers + the paired residuals
        return 4.0 * batch * tokens * dim * 48
    per_token = 4.0 * batch * tokens * dim * 24  # measured ~19 rows: qkv, heads, MLP hidden
    if name == EAGER:  # the (B, heads, N, N) scores and their softmax exist at once
        return per_token + 2 * 4.0 * batch * heads * tokens * tokens
    return per_token


# ------------------------------------------------------------------------------------------ models


def build_models() -> dict[str, torch.nn.Module]:
    import dass

    common = {"fstride": 16, "tstride": 16, "input_tdim": 1024, "num_classes": 527, "pooling": "mean"}
    torch.manual_seed(0)
    models = {SSAMBA: dass.create_model("ssamba_tiny", **common)}
    models[SDPA] = dass.create_model("ssast_tiny", **common, attention="sdpa")
    models[EAGER] = dass.create_model("ssast_tiny", **common, attention="eager")
    models[EAGER].load_state_dict(models[SDPA].state_dict())
    return {name: model.eval() for name, model in models.items()}


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds): proves the script works")
    parser.add_argument("--patches", type=int, nargs="+", default=None, help="sizes for all models")
    parser.add_argument("--ssamba-only-patches", type=int, nargs="+", default=None, help="further SSAMBA sizes")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--memory-limit-gb", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per model and size (3; quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's")
    parser.add_argument("--output", default=None, help="table file ('-': stdout only); quick default '-'")
    parser.add_argument("--plot", default=None, help="PNG path; default results/ssamba_efficiency.png "
                                                     "(quick: /tmp/ssamba_efficiency_quick.png)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    patches = args.patches or (QUICK_PATCHES if args.quick else PATCHES)
    further = args.ssamba_only_patches if args.ssamba_only_patches is not None else (
        QUICK_SSAMBA_ONLY_PATCHES if args.quick else SSAMBA_ONLY_PATCHES)
    rounds = args.rounds or (2 if args.quick else 3)
    output = args.output or ("-" if args.quick else "results/ssamba_efficiency.txt")
    plot_path = args.plot or ("/tmp/ssamba_efficiency_quick.png" if args.quick else "results/ssamba_efficiency.png")
    limit = args.memory_limit_gb * GB

    models = build_models()
    command = " ".join(["python3", "benchmarks/ssamba_efficiency.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        f"# {command}",
        (f"# CPU: {cpu_model()}, {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} "
         f"threads, load average at start {os.getloadavg()[0]:.2f}"),
        (f"# patch 16 stride 16, mean pooling, float32, no grad, random weights; time: median of {rounds} "
         "interleaved rounds; memory: peak tracked tensor allocations of one call (activations; weights and "
         "input excluded, given separately)"),
        (f"{'patches':>8} {'frames':>7} {'batch':>5} {'model':<17} {'s/call':>9} {'act GB':>8} "
         f"{'weights+input GB':>16} {'rss GB':>7}  note"),
    ]
    print("\n".join(lines), flush=True)

    # warm up every model (numba compilation, first-call allocations) on the smallest size
    warm = torch.randn(1, 2 * min(patches), 128)
    with torch.no_grad():
        for model in models.values():
            model(warm)

    results: dict[tuple[str, int], dict] = {}
    for size in patches + further:
        names = list(models) if size in patches else [SSAMBA]
        tokens = size + 2  # patches + cls (+ dist for SSAST)
        fits = {n: estimate_bytes(n, args.batch, tokens) <= limit for n in names}
        batch = args.batch if all(fits.values()) else 1
        frames = 2 * size
        x = torch.randn(batch, frames, 128)
        runnable = []
        for name in names:
            if estimate_bytes(name, batch, tokens) > limit:
                note = f"skipped: estimated {estimate_bytes(name, batch, tokens) / GB:.1f} GB > limit"
                results[(name, size)] = {"batch": batch, "skipped": note}
                lines.append(f"{size:>8} {frames:>7} {batch:>5} {name:<17} {'-':>9} {'-':>8} {'-':>16} {'-':>7}  {note}")
                print(lines[-1], flush=True)
                continue
            act, rss = measure_memory(models[name], x)
            results[(name, size)] = {"batch": batch, "act": act, "rss": rss, "times": [],
                                     "base": weight_bytes(models[name]) + x.numel() * x.element_size()}
            runnable.append(name)
        for r in range(rounds):
            order = runnable[r % len(runnable):] + runnable[:r % len(runnable)] if runnable else []
            for name in order:
                start = time.perf_counter()
                with torch.no_grad():
                    models[name](x)
                results[(name, size)]["times"].append(time.perf_counter() - start)
        for name in runnable:
            res = results[(name, size)]
            res["seconds"] = statistics.median(res["times"])
            note = "batch 1 (batch 4 over the limit for a model)" if batch != args.batch else ""
            rss = f"{res['rss'] / GB:7.3f}" if res["rss"] is not None else f"{'n/a':>7}"
            lines.append(f"{size:>8} {frames:>7} {batch:>5} {name:<17} {res['seconds']:9.3f} {res['act'] / GB:8.3f} "
                         f"{res['base'] / GB:16.3f} {rss}  {note}")
            print(lines[-1], flush=True)
        del x

    tail = summary(results, patches, further) + [f"# load average at end {os.getloadavg()[0]:.2f}"]
    lines += tail
    print("\n".join(tail), flush=True)
    write_table(lines, output)
    print(f"# plot: {make_plot(results, patches + further, args.batch, plot_path)}", flush=True)
    return 0


def summary(results: dict, patches: list[int], further: list[int]) -> list[str]:
    """Ratios at the headline size (or the largest common one) and SSAMBA's per-patch growth."""
    out = []
    common = [p for p in patches if all("seconds" in results.get((n, p), {}) for n in (SSAMBA, SDPA, EAGER))]
    if common:
        size = HEADLINE_PATCHES if HEADLINE_PATCHES in common else max(common)
        s = results[(SSAMBA, size)]
        out.append(f"# ratios at {size} patches (batch {s['batch']}); paper (GPU, 22k): 13.7x time, 21.7x memory")
        for name in (EAGER, SDPA):
            o = results[(name, size)]
            total_o, total_s = o["act"] + o["base"], s["act"] + s["base"]
            out.append(f"#   {name} / SSAMBA-tiny: time {o['seconds'] / s['seconds']:.2f}x, activations "
                       f"{o['act'] / s['act']:.2f}x, activations+weights+input {total_o / total_s:.2f}x")
    sizes = [p for p in patches + further if "seconds" in results.get((SSAMBA, p), {})]
    start = next((p for p in sizes if p >= 2048), sizes[0] if sizes else None)
    if start is not None and len(sizes) > 1:
        ref = results[(SSAMBA, start)]
        out.append(f"# SSAMBA-tiny per patch and clip relative to {start} patches (linear growth: 1.00; goal within 15 %)")
        for p in sizes:
            if p < start:
                continue
            r = results[(SSAMBA, p)]
            scale = (p * r["batch"]) / (start * ref["batch"])
            out.append(f"#   {p:>6} patches: time {r['seconds'] / ref['seconds'] / scale:.2f}, "
                       f"memory {r['act'] / ref['act'] / scale:.2f}")
    return out


def make_plot(results: dict, sizes: list[int], full_batch: int, path: str) -> str:
    from dass.plotting import pyplot, save_figure

    plt = pyplot()
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color in ((SSAMBA, "tab:blue"), (SDPA, "tab:orange"), (EAGER, "tab:red")):
        points = [(p, results[(name, p)]) for p in sizes if "seconds" in results.get((name, p), {})]
        if not points:
            continue
        xs = [p for p, _ in points]
        ax_time.plot(xs, [r["seconds"] for _, r in points], "-", color=color, label=name)
        ax_mem.plot(xs, [(r["act"] + r["base"]) / GB for _, r in points], "-", color=color, label=name)
        for p, r in points:
            face = color if r["batch"] == full_batch else "white"
            ax_time.plot([p], [r["seconds"]], "o", color=color, markerfacecolor=face)
            ax_mem.plot([p], [(r["act"] + r["base"]) / GB], "o", color=color, markerfacecolor=face)
    from matplotlib.ticker import NullFormatter

    measured = sorted({p for (_, p), r in results.items() if "seconds" in r})
    for ax, label in ((ax_time, "seconds per call"), (ax_mem, "peak memory (GB, tracked + weights + input)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(measured, [str(p) for p in measured], rotation=45)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("# of patches")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{cpu_model()}, {torch.get_num_threads()} threads, batch {full_batch} (hollow: batch 1)")
    return str(save_figure(fig, path))


if __name__ == "__main__":
    sys.exit(main())
