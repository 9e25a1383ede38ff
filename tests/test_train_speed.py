"""The fast DASS training paths against their plain references, forward and backward, on awkward sizes.

Fast paths: the numba channel-first LayerNorm (dass.ops.layer_norm), 1x1 convolutions as batched
GEMMs (Linear2d), cross-scan / cross-merge with adjoint backward, matmul projections in SS2D; the
reference is float64 maths or the original implementation kept under ``reference_ops()``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dass
from dass.models.dass import (
    Linear2d,
    LayerNorm2d,
    cross_merge,
    cross_merge_ref,
    cross_scan,
    cross_scan_ref,
    reference_ops,
)
from dass.ops.layer_norm import layer_norm_channels_first, layer_norm_channels_first_ref

torch.set_num_threads(1)

AWKWARD = [(1, 1, 1, 1), (3, 5, 7, 9), (2, 13, 1, 300), (2, 7, 17, 31)]  # 300, 527 positions > one block


def layer_norm_float64(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over dim 1 written out in float64: (x - mean) / sqrt(biased var + eps) * w + b."""
    x, weight, bias = x.double(), weight.double(), bias.double()
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight[:, None, None] + bias[:, None, None]


@pytest.mark.parametrize("shape", AWKWARD)
def test_layer_norm_channels_first_matches_float64(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 3 + 1.5).requires_grad_()
    weight = torch.randn(shape[1], generator=gen).requires_grad_()
    bias = torch.randn(shape[1], generator=gen).requires_grad_()
    grad_out = torch.randn(shape, generator=gen)

    y = layer_norm_channels_first(x, weight, bias, 1e-6)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.is_contiguous()
    grads = torch.autograd.grad((y * grad_out).sum(), (x, weight, bias))

    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    y64 = layer_norm_float64(x64, w64, b64, 1e-6)
    grads64 = torch.autograd.grad((y64 * grad_out.double()).sum(), (x64, w64, b64))

    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=2e-5)
    for name, got, want in zip(("x", "weight", "bias"), grads, grads64):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4, msg=f"grad {name}")


def test_layer_norm_channels_first_equals_the_permute_reference_and_falls_back() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 5, 70, generator=gen)
    weight, bias = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    torch.testing.assert_close(layer_norm_channels_first(x, weight, bias, 1e-5),
                               layer_norm_channels_first_ref(x, weight, bias, 1e-5), rtol=1e-5, atol=1e-5)
    # a non-contiguous (channels-last) input gives the same values
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(layer_norm_channels_first(x_cl, weight, bias, 1e-5),
                               layer_norm_channels_first_ref(x, weight, bias, 1e-5), rtol=1e-5, atol=1e-5)
    # float64 takes the reference path and is exact to float64 precision
    got = layer_norm_channels_first(x.double(), weight.double(), bias.double(), 1e-5)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, layer_norm_float64(x, weight, bias, 1e-5), rtol=1e-12, atol=1e-12)


def test_layer_norm2d_module_uses_its_eps_and_matches_reference_mode() -> None:
    norm = LayerNorm2d(9, eps=0.5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 9, 4, 11)
    with reference_ops():
        want = norm(x)
    torch.testing.assert_close(norm(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm(x).double(), layer_norm_float64(x, norm.weight.detach(), norm.bias.detach(), 0.5),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_linear2d_is_a_1x1_convolution(bias: bool) -> None:
    torch.manual_seed(0)
    layer = Linear2d(5, 3, bias=bias)
    x = torch.randn(2, 5, 3, 7, requires_grad=True)
    y = layer(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    want = F.conv2d(x.double(), layer.weight.double()[:, :, None, None],
                    layer.bias.double() if bias else None)
    want_grads = torch.autograd.grad(want.square().sum(), [x, *layer.parameters()])
    assert y.shape == (2, 3, 3, 7)
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-6)
    for got, ref in zip(grads, want_grads):
        torch.testing.assert_close(got, ref.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 6), (5, 1), (3, 7)])
def test_cross_scan_and_merge_match_reference_forward_and_backward(height: int, width: int) -> None:
    gen = torch.Generator().manual_seed(height * 10 + width)
    x = torch.randn(2, 3, height, width, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, 3, height * width, generator=gen, dtype=torch.float64)
    xs, xs_ref = cross_scan(x), cross_scan_ref(x)
    assert torch.equal(xs, xs_ref)
    assert torch.equal(*(torch.autograd.grad((t * g).sum(), x)[0] for t in (xs, xs_ref)))

    ys = torch.randn(2, 4, 3, height * width, generator=gen, dtype=torch.float64, requires_grad=True)
    gm = torch.randn(2, 3, height, width, generator=gen, dtype=torch.float64)
    merged, merged_ref = cross_merge(ys, height, width), cross_merge_ref(ys, height, width)
    torch.testing.assert_close(merged, merged_ref, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(torch.autograd.grad((merged * gm).sum(), ys)[0],
                               torch.autograd.grad((merged_ref * gm).sum(), ys)[0], rtol=1e-15, atol=1e-15)
    assert torch.autograd.gradcheck(lambda t: cross_scan(t), (x,))
    assert torch.autograd.gradcheck(lambda t: cross_merge(t, height, width), (ys,))


@pytest.mark.parametrize("frames, bins", [(37, 50), (200, 128)])
def test_dass_training_step_matches_reference_ops(frames: int, bins: int) -> None:
    """Whole network in train mode (drop-path on, same RNG): logits and every parameter gradient."""
    torch.manual_seed(0)
    model = dass.create_model("dass_tiny", num_classes=5, drop_path_rate=0.3).train()
    x = torch.randn(3, frames, bins)
    target = torch.rand(3, 5)

    def run(reference: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        if reference:
            with reference_ops():
                logits = model(x)
                F.binary_cross_entropy_with_logits(logits, target).backward()
        else:
            logits = model(x)
            F.binary_cross_entropy_with_logits(logits, target).backward()
        return logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}

    fast_logits, fast_grads = run(False)
    ref_logits, ref_grads = run(True)
    torch.testing.assert_close(fast_logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert fast_grads.keys() == ref_grads.keys()
    for key in ref_grads:
        scale = ref_grads[key].abs().max().item() + 1e-12
        torch.testing.assert_close(fast_grads[key] / scale, ref_grads[key] / scale, rtol=0, atol=1e-4,
                                   msg=f"grad of {key}")
