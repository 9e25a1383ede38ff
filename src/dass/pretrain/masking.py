"""Which patches a masked-patch pretraining step hides: SSAST's cluster masking (used by SSAMBA).

Patches are numbered frequency-major, ``id = f·T' + t`` on an ``F' x T'`` grid (the flatten order of
the patch conv, see ``docs/ssamba.md``). For one clip, :func:`cluster_mask` draws a cluster size
``c`` uniformly from ``cluster_sizes`` (3, 4 or 5) once, then repeatedly a start ``s`` uniform in
``[0, P)`` and adds the ``c x c`` block ``s + T'·i + j`` (``i, j < c``), keeping ids with
``0 < id < P``, until *more than* M distinct ids are collected; it returns the first M ids of
Python's ``list(set(ids))`` (CPython's order for small ints: ascending, so the highest ids are the
ones dropped). Consequences of the rule, reproduced as the authors wrote it:

* patch 0 (the lowest frequency row, first time step) is never masked;
* a block whose start is near the right edge of a row continues at the left of the next row
  (``s + j`` runs past ``T'``), and blocks near the top are cut at ``P``;
* exactly M distinct ids come back (M <= P - 2 so that more than M candidates exist).

``cluster=False`` draws M distinct ids uniformly from ``1 .. P-1`` instead (SSAST's non-cluster
option, also never patch 0).

Masks are drawn from a :class:`numpy.random.Generator` (in pretraining: the per-item generator
seeded from ``(seed, epoch, position)``), so they do not depend on the number of processes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["AUTHORS_PATCHES", "cluster", "cluster_mask", "draw_mask", "random_mask", "scaled_mask_count"]

#: The authors' patch count (10.24 s, 128 bins, 16 x 16 patches at stride 16: 8 x 64); mask counts
#: in their recipes (300 in training, 400 for validation) are relative to it.
AUTHORS_PATCHES = 512


def scaled_mask_count(count_for_512: int, num_patches: int) -> int:
    """``round(count_for_512 · P / 512)``, at least 1 and at most ``P - 2``: e.g. the validation's 400
    of 512 patches for a shorter clip (``scaled_mask_count(400, 96) = 75``)."""
    return int(min(max(1, round(count_for_512 * num_patches / AUTHORS_PATCHES)), num_patches - 2))


def _check(num_patches: int, time_patches: int, num_masked: int) -> None:
    if num_patches < 3 or time_patches < 1 or num_patches % time_patches:
        raise ConfigError(f"cannot mask a grid of {num_patches} patches with {time_patches} time patches per row")
    if not 1 <= num_masked <= num_patches - 2:
        raise ConfigError(
            f"the number of masked patches must be in [1, {num_patches - 2}] for {num_patches} "
            f"patches (patch 0 is never masked and more than M candidates are needed), got {num_masked}"
        )


def cluster(start: int, size: int, time_patches: int, num_patches: int) -> list[int]:
    """The ids of one ``size x size`` block starting at ``start``: ``start + T'·i + j`` for ``i, j < size``
    (row-major), keeping ``0 < id < num_patches``."""
    ids = [start + time_patches * i + j for i in range(size) for j in range(size)]
    return [k for k in ids if 0 < k < num_patches]


def cluster_mask(
    rng: np.random.Generator,
    num_patches: int,
    time_patches: int,
    num_masked: int,
    cluster_sizes: tuple[int, ...] | list[int] = (3, 4, 5),
) -> list[int]:
    """M = ``num_masked`` distinct patch ids for one clip by the cluster rule of the module docstring."""
    _check(num_patches, time_patches, num_masked)
    if not cluster_sizes or any(int(c) < 1 for c in cluster_sizes):
        raise ConfigError(f"cluster sizes must be positive integers, got {list(cluster_sizes)}")
    size = int(cluster_sizes[int(rng.integers(len(cluster_sizes)))])
    drawn: list[int] = []
    distinct: set[int] = set()
    while len(distinct) <= num_masked:
        block = cluster(int(rng.integers(num_patches)), size, time_patches, num_patches)
        drawn += block
        distinct.update(block)
    return list(set(drawn))[:num_masked]


def random_mask(rng: np.random.Generator, num_patches: int, num_masked: int) -> list[int]:
    """M distinct ids drawn uniformly from ``1 .. P-1`` (no clusters)."""
    _check(num_patches, 1, num_masked)
    return (1 + rng.permutation(num_patches - 1)[:num_masked]).tolist()


def draw_mask(
    rng: np.random.Generator,
    num_patches: int,
    time_patches: int,
    num_masked: int,
    *,
    clustered: bool = True,
    cluster_sizes: tuple[int, ...] | list[int] = (3, 4, 5),
) -> torch.Tensor:
    """One clip's mask ids as an int64 tensor ``(M,)``."""
    ids = (
        cluster_mask(rng, num_patches, time_patches, num_masked, cluster_sizes)
        if clustered
        else random_mask(rng, num_patches, num_masked)
    )
    return torch.tensor(ids, dtype=torch.int64)
