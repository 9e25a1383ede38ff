"""The pretraining network: a patch encoder plus SSAST's mask embedding and two prediction heads.

``MaskedPatchModel(encoder)`` works with every patch encoder of the registry: SSAMBA
(:class:`dass.models.ssamba.SSAMBA`) and AST/SSAST (:class:`dass.models.ast.AST`). It uses their
``patch_embed`` (``(B, 1, F, T) -> (B, P, D)``), ``forward_tokens(patches, time_patches) -> (B, n + P, D)``
(``n = num_prefix_tokens``: 1 cls token for SSAMBA, cls + distillation for AST) and ``patch_grid``.
Pretraining needs non-overlapping patches (strides = patch size), as the authors' code does.

One masked pass (the authors' ``mpc`` / ``mpg``): the patch embeddings at the masked ids are
*replaced* by the learned ``mask_embed (1, 1, D)`` (Xavier-normal init), before the prefix tokens and
the position table are added; the encoder runs; the output tokens at the masked ids (after the final
norm) go through ``cpredlayer`` (discriminative) or ``gpredlayer`` (generative), each
``Linear(D, D) -> ReLU -> Linear(D, p²)`` with PyTorch's default init.

``forward(features, mask_c, mask_g)`` runs the joint objective: two passes with independently drawn
masks, ``loss = NCE + mse_weight · MSE`` (``mse_weight`` 10). With ``objective="mpc"`` or ``"mpg"``
only one pass runs (the other head is frozen).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .losses import gather_patches, masked_mse, masked_nce, patch_targets

__all__ = ["OBJECTIVES", "MaskedPatchModel", "check_encoder", "prediction_head"]

OBJECTIVES = ("joint", "mpc", "mpg")
SSL_HEAD_PREFIXES = ("mask_embed", "cpredlayer.", "gpredlayer.")


def prediction_head(dim: int, out: int) -> nn.Sequential:
    """``Linear(dim, dim) -> ReLU -> Linear(dim, out)`` (the authors' ``cpredlayer`` / ``gpredlayer``)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


def check_encoder(encoder: nn.Module) -> None:
    """Raise :class:`ConfigError` unless ``encoder`` is a patch encoder with non-overlapping patches."""
    needed = ("patch_embed", "forward_tokens", "patch_grid", "num_prefix_tokens")
    if not all(hasattr(encoder, n) for n in needed):
        kind = getattr(encoder, "model_type", type(encoder).__name__)
        raise ConfigError(f"masked-patch pretraining needs a patch encoder (SSAMBA, AST/SSAST); {kind} is not one")
    c = encoder.config
    if c.fstride != c.patch_size or c.tstride != c.patch_size:
        raise ConfigError(
            f"pretraining uses non-overlapping patches: strides must equal the patch size "
            f"{c.patch_size}, got fstride={c.fstride} tstride={c.tstride}"
        )


class MaskedPatchModel(nn.Module):
    """Encoder + ``mask_embed`` + ``cpredlayer`` + ``gpredlayer``; see the module docstring.

    The encoder's classification head (``mlp_head``) is not used and is frozen.
    """

    def __init__(
        self,
        encoder: nn.Module,
        objective: str = "joint",
        mse_weight: float = 10.0,
        temperature: float | None = None,
        negatives: str = "clip",
    ) -> None:
        super().__init__()
        check_encoder(encoder)
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        self.encoder = encoder
        dim, patch = encoder.config.embed_dim, encoder.config.patch_size
        self.mask_embed = nn.Parameter(nn.init.xavier_normal_(torch.zeros(1, 1, dim)))
        self.cpredlayer = prediction_head(dim, patch * patch)
        self.gpredlayer = prediction_head(dim, patch * patch)
        self.objective, self.mse_weight = objective, float(mse_weight)
        self.temperature, self.negatives = temperature, negatives
        for module in [
            getattr(encoder, "mlp_head", None),
            self.gpredlayer if objective == "mpc" else None,
            self.cpredlayer if objective == "mpg" else None,
        ]:
            if module is not None:
                module.requires_grad_(False)

    @property
    def patch_size(self) -> int:
        return int(self.encoder.config.patch_size)

    def grid(self, num_frames: int) -> tuple[int, int]:
        """(F', T') of an input of ``num_frames`` frames."""
        return tuple(self.encoder.patch_grid(num_frames))

    def masked_outputs(self, features: Tensor, mask_ids: Tensor) -> Tensor:
        """Features ``(B, T, F)``, mask ids ``(B, M)`` -> encoder outputs at the masked patches ``(B, M, D)``."""
        image = features.unsqueeze(1).transpose(2, 3)  # (B, 1, F, T)
        patches = self.encoder.patch_embed(image)  # (B, P, D)
        masked = torch.zeros(patches.shape[:2], dtype=torch.bool, device=patches.device)
        masked.scatter_(1, mask_ids, True)
        patches = torch.where(masked[..., None], self.mask_embed.to(patches.dtype), patches)
        _, time_patches = self.grid(features.shape[1])
        tokens = self.encoder.forward_tokens(patches, time_patches)[:, self.encoder.num_prefix_tokens :]
        return gather_patches(tokens, mask_ids)

    def mpc(self, features: Tensor, mask_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Discriminative pass: ``(NCE, accuracy)``."""
        predictions = self.cpredlayer(self.masked_outputs(features, mask_ids)).float()
        targets = gather_patches(patch_targets(features, self.patch_size), mask_ids).float()
        return masked_nce(predictions, targets, self.temperature, self.negatives)

    def mpg(self, features: Tensor, mask_ids: Tensor) -> Tensor:
        """Generative pass: the MSE on the masked raw patches."""
        predictions = self.gpredlayer(self.masked_outputs(features, mask_ids)).float()
        targets = gather_patches(patch_targets(features, self.patch_size), mask_ids).float()
        return masked_mse(predictions, targets)

    def forward(self, features: Tensor, mask_c: Tensor, mask_g: Tensor) -> dict[str, Tensor]:
        """``{"loss", "nce", "accuracy", "mse"}`` (scalars; absent terms are 0) for one batch."""
        zero = features.new_zeros(())
        nce, accuracy, mse = zero, zero, zero
        if self.objective in ("joint", "mpc"):
            nce, accuracy = self.mpc(features, mask_c)
        if self.objective in ("joint", "mpg"):
            mse = self.mpg(features, mask_g)
        return {"loss": nce + self.mse_weight * mse, "nce": nce, "accuracy": accuracy, "mse": mse}

    def ssl_heads(self) -> dict[str, Tensor]:
        """``mask_embed`` and the ``cpredlayer.*`` / ``gpredlayer.*`` tensors (the authors' key names)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(SSL_HEAD_PREFIXES)}

    def load_ssl_heads(self, heads: dict[str, Any], source: str = "checkpoint") -> None:
        """Copy ``mask_embed`` / ``cpredlayer.*`` / ``gpredlayer.*`` into this model (every key required)."""
        from ..checkpoints import load_weights

        holder = nn.Module()
        holder.mask_embed, holder.cpredlayer, holder.gpredlayer = self.mask_embed, self.cpredlayer, self.gpredlayer
        holder.model_type = "pretraining heads"
        load_weights(holder, dict(heads), source=source)
