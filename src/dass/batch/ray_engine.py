"""The batch job on a Ray cluster (Ray Data): files sharded over actors, one model per actor.

The driver (the process that runs ``dass tag --ray`` or ``dass.batch.tag(..., engine="ray")``) reads
the file list, skips what the output already holds, and streams the rest through
``ray.data.from_items(paths).map_batches(_RayTagger, concurrency=actors)`` with the order of the
input kept (``preserve_order``). Each actor builds the model once from its config and weights
(shipped through Ray's object store: the nodes need dass installed, not the checkpoint), then
decodes, featurises and tags its batches with the same :class:`~dass.batch.pipeline.Tagger` as the
local engine, so the rows are the same. The driver appends the rows to the output as they arrive:
the same resumable file as a local run (see :mod:`dass.batch.store`).

The audio paths must be readable on every node under the same name (a shared file system). See
docs/archive.md for a multi-node cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import DassError
from .pipeline import Tagger, TagOptions, prepare

__all__ = ["require_ray", "run_ray"]


def require_ray() -> Any:
    """``import ray`` (with Ray Data) or a :class:`DassError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise DassError('the Ray engine needs Ray Data: pip install "dass[ray]" (or pip install "ray[data]")') from None
    return ray


class _RayTagger:
    """A Ray Data actor: one model, batches ``{"file": [...]}`` -> ``{"row": [JSON text, ...]}``."""

    def __init__(self, model_ref: Any, names: Sequence[str | None] | None, options: TagOptions, threads: int) -> None:
        import torch

        from ..models.registry import build_from_config

        torch.set_num_threads(max(1, int(threads)))
        import ray

        config, state = ray.get(model_ref)  # a reference nested in the arguments is not resolved by Ray
        model = build_from_config(config)
        model.load_state_dict(state)
        self.tagger = Tagger(model, names, options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        options = self.tagger.options
        items = [prepare(str(path), options.min_frames, options.max_frames) for path in batch["file"]]
        rows = [json.dumps(row, allow_nan=False) for row in self.tagger.run(items)]
        return {"row": np.array(rows, dtype=object)}


def run_ray(paths: Sequence[str], model: Any, names: Sequence[str | None] | None, options: TagOptions,
            address: str | None = None, actors: int = 2, threads: int = 1) -> Iterator[dict[str, Any]]:
    """Rows of ``paths`` in order, computed on a Ray cluster (see the module docstring).

    ``address``: an existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts
    a local one (or uses the one this process already joined). ``actors``: model replicas;
    ``threads``: CPU threads (and Ray CPUs) per actor.
    """
    ray = require_ray()
    if actors < 1 or threads < 1:
        raise DassError(f"the Ray engine needs actors >= 1 and threads >= 1, got {actors} and {threads}")
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address is None:
            import os

            kwargs["num_cpus"] = max(actors * threads, os.cpu_count() or 1)
            kwargs["_node_ip_address"] = "127.0.0.1"  # a cluster of this machine alone: loopback only
        ray.init(address=address, **kwargs)
        started = True
    import logging

    quiet = logging.getLogger("ray.data")  # its INFO lines would interleave with the progress bar
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        config = {**model.config.to_dict(), "model_type": model.model_type}
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        model_ref = ray.put((config, state))
        dataset = ray.data.from_items([{"file": p} for p in paths],
                                      override_num_blocks=max(1, min(len(paths), 4 * actors)))
        tagged = dataset.map_batches(_RayTagger, batch_size=options.batch_size, concurrency=actors, num_cpus=threads,
                                     fn_constructor_kwargs={"model_ref": model_ref, "names": names, "options": options,
                                                            "threads": threads})
        for record in tagged.iter_rows():
            yield json.loads(record["row"])
    finally:
        quiet.setLevel(level)
        if started:
            ray.shutdown()
