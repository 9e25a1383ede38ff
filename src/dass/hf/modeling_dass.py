"""DASS as a transformers ``PreTrainedModel``, with the released Hugging Face checkpoints' weight names.

The module tree is named so that ``state_dict()`` keys are exactly the released layout (SPEC §3b):

    dass.patch_embeddings.projection.{0,1,3,4}.*   stem: conv, LayerNorm, (GELU), conv, LayerNorm
    dass.layers.i.blocks.j.{norm,op,norm2,mlp}.*   VSS blocks (our :class:`~dass.models.dass.VSSBlock`)
    dass.layers.i.blocks.j.op.x_proj.weight        (4 (R + 2N), C)  the 4 directions stacked flat
    dass.layers.i.blocks.j.op.dt_projs.weight      (4 C, R)
    dass.layers.i.downsample.{down,norm}.*         stride-2 conv + LayerNorm between stages
    dass.norm.*, head.*                            final LayerNorm, linear classifier

so released folders load unchanged and ``save_pretrained`` writes that layout again (which
:func:`dass.from_pretrained` reads too). The computation is our network's: the blocks are
:class:`~dass.models.dass.VSSBlock` with :class:`DASSSelectiveScan2D`, which is our
:class:`~dass.models.dass.SS2D` storing its two direction-stacked weights flat; on the same weights
the logits equal :class:`dass.models.dass.DASS`'s bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from ..errors import AudioError, ConfigError
from ..models.dass import NUM_DIRECTIONS, SS2D, LayerNorm2d, VSSBlock
from .configuration_dass import DASSConfig

__all__ = ["DASSForAudioClassification", "DASSModel", "DASSPreTrainedModel", "DASSSelectiveScan2D"]


class _StackedWeight(nn.Module):
    """Holds one parameter named ``weight`` (the released checkpoints' ``x_proj`` / ``dt_projs``)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def extra_repr(self) -> str:
        return f"weight: {tuple(self.weight.shape)}"


class DASSSelectiveScan2D(SS2D):
    """Our :class:`~dass.models.dass.SS2D`, with the per-direction projections stored as released.

    ``x_proj.weight`` is ``(K (R + 2N), D)`` and ``dt_projs.weight`` ``(K D, R)`` (K = 4 directions);
    :class:`SS2D` reads them as the views ``x_proj_weight`` ``(K, R + 2N, D)`` and ``dt_projs_weight``
    ``(K, D, R)`` -- the same numbers, so gradients flow to the stored parameters.
    """

    def __init__(self, d_model: int, d_state: int, ssm_ratio: float, dt_rank: int | str) -> None:
        super().__init__(d_model, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank)
        x_proj = self._parameters.pop("x_proj_weight").detach()  # (K, R + 2N, D), initialised by SS2D
        dt_projs = self._parameters.pop("dt_projs_weight").detach()  # (K, D, R)
        self.x_proj = _StackedWeight(x_proj.reshape(-1, self.d_inner))
        self.dt_projs = _StackedWeight(dt_projs.reshape(-1, self.dt_rank))

    def __getattr__(self, name: str):
        modules = self.__dict__["_modules"]  # (during SS2D.__init__ the stacked parameters still exist)
        if name == "x_proj_weight" and "x_proj" in modules:
            return modules["x_proj"].weight.view(NUM_DIRECTIONS, -1, self.d_inner)
        if name == "dt_projs_weight" and "dt_projs" in modules:
            return modules["dt_projs"].weight.view(NUM_DIRECTIONS, self.d_inner, self.dt_rank)
        return super().__getattr__(name)


class DASSPatchEmbeddings(nn.Module):
    """Stem (stride 4): ``(B, 1, F, T) -> (B, dims[0], F/4, T/4)`` (sizes rounded up)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = dim // 2
        self.projection = nn.Sequential(
            nn.Conv2d(1, hidden, kernel_size=3, stride=2, padding=1),
            LayerNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, kernel_size=3, stride=2, padding=1),
            LayerNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class DASSDownsample(nn.Module):
    """Between stages: stride-2 3x3 conv ``dim -> next_dim``, then LayerNorm over channels."""

    def __init__(self, dim: int, next_dim: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, next_dim, kernel_size=3, stride=2, padding=1)
        self.norm = LayerNorm2d(next_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.down(x))


class DASSStage(nn.Module):
    """VSS blocks of one width (``blocks``), then (except after the last stage) ``downsample``."""

    def __init__(self, dim: int, next_dim: int | None, drop_paths: list[float], network_config) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for rate in drop_paths:
            block = VSSBlock(dim, rate, network_config)  # our block; its SS2D swapped for the released layout
            block.op = DASSSelectiveScan2D(dim, network_config.d_state, network_config.ssm_ratio,
                                           network_config.dt_rank)
            self.blocks.append(block)
        self.downsample = nn.Identity() if next_dim is None else DASSDownsample(dim, next_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, dim, H, W)`` -> (the blocks' output ``(B, dim, H, W)``, downsampled ``(B, next_dim, H/2, W/2)``)."""
        for block in self.blocks:
            x = block(x)
        return x, self.downsample(x)


class DASSPreTrainedModel(PreTrainedModel):
    """Weight initialisation (VMamba "v0", as :class:`dass.models.dass.DASS`) and shared settings."""

    config: DASSConfig
    config_class = DASSConfig
    base_model_prefix = "dass"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = False
    _no_split_modules = ["VSSBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Linear / 1x1 convs trunc-normal(0.02) with zero bias; LayerNorm 1 / 0; plain convs PyTorch's
        default; SS2D's SSM parameters by :meth:`SS2D.reset_ssm_parameters`."""
        if isinstance(module, DASSSelectiveScan2D):
            module.reset_ssm_parameters()
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            module.reset_parameters()


def _network_config(config: DASSConfig):
    """Our network dataclass for ``config``; a ConfigError names the offending setting."""
    try:
        return config.to_network_config()
    except ConfigError as error:
        raise ConfigError(f"cannot build a DASS model from this config: {error}") from None


class DASSModel(DASSPreTrainedModel):
    """The DASS backbone: features ``(B, T, F)`` -> final map ``(B, C, F/32, T/32)`` and its mean ``(B, C)``."""

    def __init__(self, config: DASSConfig) -> None:
        super().__init__(config)
        network = _network_config(config)
        dims, depths = network.dims, network.depths
        self.patch_embeddings = DASSPatchEmbeddings(dims[0])
        num_blocks = sum(depths)  # drop-path rate rises linearly from 0 over all blocks (as in DASS)
        rates = [network.drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            start = sum(depths[:i])
            next_dim = dims[i + 1] if i + 1 < len(dims) else None
            self.layers.append(DASSStage(dim, next_dim, rates[start:start + depth], network))
        self.norm = LayerNorm2d(dims[-1])
        self.post_init()

    def forward(self, input_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> BaseModelOutputWithPooling | tuple:
        """Normalised features ``(B, T, F)`` (from :class:`~dass.hf.DASSFeatureExtractor`).

        Returns ``last_hidden_state`` ``(B, C, H', W')`` (after the final LayerNorm; H' frequency rows,
        W' time steps), ``pooler_output`` ``(B, C)`` (mean over all positions) and, if
        ``output_hidden_states``, the stem output and each stage's output before downsampling.
        """
        if input_values is None or input_values.dim() != 3 or min(input_values.shape) < 1:
            shape = None if input_values is None else tuple(input_values.shape)
            raise AudioError(f"DASS expects input_values of shape (batch, time, freq), got {shape}")
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        x = self.patch_embeddings(input_values.unsqueeze(1).transpose(2, 3))  # (B, 1, F, T) -> stem
        hidden_states = [x] if output_hidden_states else None
        for stage in self.layers:
            stage_output, x = stage(x)
            if hidden_states is not None:
                hidden_states.append(stage_output)
        last = self.norm(x)
        pooled = last.mean(dim=(2, 3))
        output = BaseModelOutputWithPooling(
            last_hidden_state=last, pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
        )
        return output if return_dict else output.to_tuple()


class DASSForAudioClassification(DASSPreTrainedModel):
    """DASS audio tagger: features ``(B, T, F)`` -> ``logits`` ``(B, num_labels)``; multi-label.

    With ``labels`` (multi-hot ``(B, num_labels)``, floats in [0, 1]) it also returns the mean
    binary cross-entropy ``loss`` (what :class:`transformers.Trainer` minimises). Probabilities are
    ``torch.sigmoid(logits)``.
    """

    def __init__(self, config: DASSConfig) -> None:
        super().__init__(config)
        self.dass = DASSModel(config)
        self.head = nn.Linear(_network_config(config).dims[-1], config.num_labels)
        self.post_init()

    def forward(self, input_values: torch.Tensor, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> SequenceClassifierOutput | tuple:
        """``input_values`` ``(B, T, F)``; ``labels`` optional ``(B, num_labels)``.

        ``attention_mask`` (which :class:`~dass.hf.DASSFeatureExtractor` returns only when asked) is
        accepted and not used: like the released model, DASS reads the zero-padded frames as it was
        trained to.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.dass(input_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.head(outputs.pooler_output)
        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(logits.shape):
                raise ConfigError(
                    f"labels must be multi-hot targets of shape (batch, num_labels) = {tuple(logits.shape)}, "
                    f"got {tuple(labels.shape)}"
                )
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()
