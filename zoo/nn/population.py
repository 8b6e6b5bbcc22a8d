"""The population forward: M models of one architecture at once, on stacked parameters.

:func:`forward_population` reads an architecture's layer list (:mod:`zoo.nn.architectures`) and
runs it on ``{name: (M, *shape)}``: linear layers as batched matmuls, convolutions as one
grouped convolution with the population folded into channels (measured on CPU: vmap over
convolutions is slower than a per-model loop; ``groups=M`` wins).

Shape comments name the population axis first: ``(M, B, F)``.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.nn.architectures import dropout_mask
from zoo.nn.fields import FourierFeatures


def _pop_linear(name: str, params: dict, h: torch.Tensor) -> torch.Tensor:
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (M, O, I), (M, O)
    # matmul + add, not baddbmm: on CPU baddbmm copies each model's weight per call
    return torch.matmul(h, w.mT) + b.unsqueeze(1)  # (M, B, O)


def _pop_conv(name: str, layer: nn.Conv2d, params: dict, h: torch.Tensor) -> torch.Tensor:
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (M, O, I, k, k), (M, O)
    m = w.shape[0]
    return nn.functional.conv2d(
        h,
        w.reshape(m * w.shape[1], *w.shape[2:]),
        b.reshape(-1),
        stride=layer.stride,
        padding=layer.padding,
        groups=m,
    )  # (B, M*O, H', W')


def _unfolded_conv(layer: nn.Conv2d, params: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """M models' convolutions of one input ``(B, C, H, W)`` as a matmul with its patches:
    ``(B, M*O, H', W')``, folded and channels_last like :func:`_pop_conv`'s output."""
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (M, O, C, k, k), (M, O)
    m, o = w.shape[:2]
    cols = nn.functional.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)
    out = torch.matmul(w.reshape(m * o, -1), cols) + b.reshape(-1, 1)  # (B, M*O, H'*W')
    dims = zip(x.shape[2:], layer.padding, layer.kernel_size, layer.stride, strict=True)
    size = [(n + 2 * p - k) // s + 1 for n, p, k, s in dims]
    return out.view(len(x), m * o, *size).contiguous(memory_format=torch.channels_last)


def _to_folded(x: torch.Tensor) -> torch.Tensor:
    """(M, B, C, H, W) -> (B, M*C, H, W): the population as groups of channels.

    channels_last: grouped convolutions and pooling run 1.2-2x faster on CPU in that layout;
    values are the same.
    """
    m, b, c, hh, ww = x.shape
    folded = x.permute(1, 0, 2, 3, 4).reshape(b, m * c, hh, ww)
    return folded.contiguous(memory_format=torch.channels_last)


def _from_folded(h: torch.Tensor, m: int) -> torch.Tensor:
    """(B, M*C, H, W) -> (M, B, C*H*W), flattening each model's features as nn.Flatten does."""
    b, mc, hh, ww = h.shape
    return h.reshape(b, m, mc // m, hh, ww).permute(1, 0, 2, 3, 4).reshape(m, b, -1)


def _pop_dropout(
    h: torch.Tensor, dropout: list[tuple[torch.Generator, float]], folded: bool
) -> torch.Tensor:
    """Model m's mask drawn with its generator at its rate, in the shape model m's own module
    sees, so the population equals each model run alone with :class:`SeededDropout` (a rate of
    0 draws nothing there either)."""
    m = len(dropout)
    if folded:  # (B, M*C, H, W): model m owns channels m*C .. (m+1)*C
        b, mc, hh, ww = h.shape
        shape = (b, mc // m, hh, ww)
    else:  # (M, B, F)
        shape = h.shape[1:]
    masks = [
        dropout_mask(shape, p, g, h) if p > 0 else torch.ones(shape, dtype=h.dtype, device=h.device)
        for g, p in dropout
    ]
    return h * (torch.cat(masks, 1) if folded else torch.stack(masks))


def inputs_as(x: torch.Tensor, device, dtype: torch.dtype) -> torch.Tensor:
    """A task's inputs on ``device``: floating inputs in ``dtype``, token ids stay int64."""
    return x.to(device, dtype) if x.is_floating_point() else x.to(device)


def forward_population(
    module: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    dropout: list[tuple[torch.Generator, float]] | None = None,
    unfold_first: bool = False,
    training: bool = False,
) -> torch.Tensor:
    """Run M models of one architecture at once.

    Args:
        module: any instance of the architecture (only its layer list is read, not its weights).
        params: ``{name: (M, *shape)}`` stacked parameters.
        x: ``(M, B, *input_shape)``, each model its own minibatch; for one batch shared by all
            models pass ``x.expand(M, *x.shape)`` (a view, no copy): the first layer then runs
            as one large matmul / convolution over all models' weights.
        dropout: per model, the generator of its masks and its rate, to train with dropout
            (masks as the model's own :class:`SeededDropout` would draw them; the rates may
            differ, the module's own ``p`` is not used); ``None``: dropout is the identity.
        unfold_first: with a shared input, run a first convolution as a matmul over the
            unfolded input patches. Same values; its double backward (Hessian-vector products)
            skips the input gradient a convolution's computes and does not need (CNN-s HVP on
            256 examples: 52 -> 40 ms on CPU).
        training: normalization in training mode (batch statistics; BatchNorm's running
            statistics in ``params`` updated in place), as the trainer's steps need; otherwise
            evaluation mode. Chain networks have no normalization and ignore it.
    Returns:
        logits ``(M, B, n_classes)`` (``(M, B, T, vocabulary)`` for a transformer); model m's
        slice equals ``module`` loaded with its weights.
    """
    if not isinstance(module, nn.Sequential):  # a residual network or a transformer
        return module.forward_population(params, x, training=training)
    m = x.shape[0]
    children = list(module.named_children())
    start, h, folded = _first_layer(children, params, x, unfold_first)
    for name, layer in children[start:]:
        if isinstance(layer, nn.Conv2d):
            h = _pop_conv(name, layer, params, h)
        elif isinstance(layer, nn.Linear):
            h = _pop_linear(name, params, h)
        elif isinstance(layer, nn.Flatten):
            h = _from_folded(h, m) if folded else h.reshape(m, h.shape[1], -1)
            folded = False
        elif isinstance(layer, nn.Dropout):
            h = _pop_dropout(h, dropout, folded) if dropout is not None else h
        else:  # pooling and activations act per channel / elementwise: the folding is invisible
            h = layer(h)
    return h


def _first_layer(children, params: dict, x: torch.Tensor, unfold: bool = False):
    """Where the layer loop starts, its input, and whether it is folded ``(B, M*C, H, W)``.

    With an input shared by all models (``x.stride(0) == 0``) the first weight layer is one
    ordinary matmul/convolution whose outputs are the M models' outputs side by side.
    """
    m, shared = x.shape[0], x.dim() > 1 and x.stride(0) == 0 and x.shape[0] > 1
    first_name, first = children[0]
    if isinstance(first, nn.Conv2d):
        if unfold and (shared or m == 1) and first.dilation == (1, 1) and first.groups == 1:
            return 1, _unfolded_conv(first, params, first_name, x[0]), True
        if not shared:
            return 0, _to_folded(x), True
        w, b = params[f"{first_name}.weight"], params[f"{first_name}.bias"]
        h = nn.functional.conv2d(
            x[0].contiguous(memory_format=torch.channels_last),
            w.reshape(m * w.shape[1], *w.shape[2:]),
            b.reshape(-1),
            stride=first.stride,
            padding=first.padding,
        )  # (B, M*O, H', W'): already folded
        return 1, h, True
    if shared and isinstance(first, nn.Flatten) and isinstance(children[1][1], nn.Linear):
        name = children[1][0]
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (M, O, I), (M, O)
        xb = x[0].reshape(x.shape[1], -1)  # (B, I)
        h = torch.addmm(b.reshape(-1), xb, w.reshape(-1, w.shape[2]).T)  # (B, M*O)
        return 2, h.view(len(xb), m, -1).transpose(0, 1), False  # (M, B, O)
    if shared and isinstance(first, nn.Linear | FourierFeatures):
        # coordinate networks: encode the shared coordinates once, then one matmul over every
        # model's first-layer weights (the INR's best case: tiny models, one shared grid)
        start, xb = (1, first(x[0])) if isinstance(first, FourierFeatures) else (0, x[0])
        name = children[start][0]
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (M, O, I), (M, O)
        h = torch.addmm(b.reshape(-1), xb, w.reshape(-1, w.shape[2]).T)  # (B, M*O)
        return start + 1, h.view(len(xb), m, -1).transpose(0, 1), False  # (M, B, O)
    return 0, x, False
