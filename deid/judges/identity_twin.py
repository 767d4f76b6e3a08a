"""A fast, frozen twin of :class:`deid.judges.identity_net.IdentityNet` for training losses.

The stage-1 attack term runs dlib's face-recognition ResNet on 16-24 chips of 150x150 per
step and needs only the gradient to the *images* (the network is frozen). :class:`DlibTwin`
is the same function as :class:`~deid.judges.identity_net.IdentityNet` up to float rounding,
arranged for that use:

- every conv + per-channel affine pair (dlib's folded batch norm) is one convolution with
  ``weight * s`` and ``bias * s + t``;
- activations are ``channels_last`` (oneDNN's NHWC kernels; PyTorch's NHWC max-pool is about
  10x faster than its NCHW one on a CPU) and the ReLUs work in place;
- the backward to the chips is written by hand from the saved ReLU outputs and max-pool
  indices (the adjoint of the forward, layer by layer: transposed convolutions, the
  average-pool and zero-pad adjoints of dlib's ``add_prev``), and runs only on the rows whose
  embedding gradient is not zero: the attack hinge gives a gradient to at most one of its two
  restorations per face, and none while a face's hinge is inactive.

References: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(the block structure); Dumoulin & Visin, "A guide to convolution arithmetic for deep
learning", arXiv:1603.07285, 2016, sec. 4 (a strided convolution's input gradient is a
transposed convolution; the phase decomposition of :func:`_stride2_input_grad`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from deid.judges.identity_net import INPUT_DIVISOR, INPUT_SIZE_PX, IdentityNet, warp_to_chips

__all__ = ["DlibTwin", "training_twin", "twin_embed"]

log = logging.getLogger(__name__)


def _folded_conv(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``conv(x) * s + t`` (the twin's conv + per-channel affine, dlib's
    folded batch norm) as one convolution, ``channels_last``."""
    s, t = m.scale_weight.detach(), m.scale_bias.detach()
    w = (m.conv.weight.detach() * s.view(-1, 1, 1, 1)).contiguous(
        memory_format=torch.channels_last)
    b = m.conv.bias.detach() if m.conv.bias is not None else torch.zeros_like(s)
    return w, b * s + t


def _phase_weight(w: torch.Tensor) -> torch.Tensor:
    """``(4 Cin, Cout, m, m)`` kernel of the input gradient of a stride-2 convolution by
    ``w (Cout, Cin, k, k)``, one output phase ``(p, q)`` per group of ``Cin`` channels: phase
    ``(p, q)`` correlates the gradient with the taps ``w[2i + p, 2j + q]`` (flipped; the kernel
    zero-padded to the even size ``2m``)."""
    co, ci, kh, kw = w.shape
    m = (max(kh, kw) + 1) // 2
    wp = F.pad(w, (0, 2 * m - kw, 0, 2 * m - kh))
    wp = wp.reshape(co, ci, m, 2, m, 2).flip(2, 4).permute(1, 3, 5, 0, 2, 4)
    return wp.reshape(4 * ci, co, m, m).contiguous(memory_format=torch.channels_last)


def _stride2_input_grad(grad: torch.Tensor, phase_weight: torch.Tensor, size) -> torch.Tensor:
    """Input gradient ``(N, Cin, *size)`` of an unpadded stride-2 convolution: the four
    phases as one stride-1 convolution, interleaved (for the twin's 7x7 stem on 3 channels
    about 2x faster on a CPU than oneDNN's backward-data, which is slow for few channels)."""
    m = phase_weight.shape[-1]
    n, c = grad.shape[0], phase_weight.shape[0] // 4
    z = F.conv2d(grad, phase_weight, padding=m - 1)
    lh, lw = z.shape[-2:]
    z = z.reshape(n, c, 2, 2, lh, lw).permute(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * lh, 2 * lw)
    h, w = size
    return F.pad(z, (0, max(0, w - 2 * lw), 0, max(0, h - 2 * lh)))[..., :h, :w]


def _transposed_output_padding(size_in: int, size_out: int, k: int, stride: int,
                               pad: int) -> int:
    return size_in - ((size_out - 1) * stride - 2 * pad + k)


class _TwinRowsFunction(torch.autograd.Function):
    """Embeddings of the dlib chips of ``images (N, C, H, W)`` (``warp_to_chips`` with
    ``affines``) by a :class:`DlibTwin`. The backward runs the warp and the network only on
    the rows whose embedding gradient is not zero (the attack hinge gives a gradient to one
    of its two restorations per face, and none while a face's hinge is inactive), from the
    ReLU outputs and max-pool indices the forward saved; the other rows get a zero gradient."""

    @staticmethod
    def forward(ctx, images, affines, twin):
        chips = warp_to_chips(images, affines)
        emb, saved = twin.run(chips.contiguous(memory_format=torch.channels_last), save=True)
        ctx.save_for_backward(images, affines)
        ctx.twin, ctx.saved = twin, saved
        return emb

    @staticmethod
    def backward(ctx, grad):
        images, affines = ctx.saved_tensors
        out = torch.zeros_like(images)
        rows = (grad != 0).any(dim=-1).nonzero().flatten()
        if len(rows):
            g_chips = ctx.twin.input_grad(grad[rows], ctx.saved, rows)
            with torch.enable_grad():
                x = images[rows].detach().requires_grad_(True)
                chips = warp_to_chips(x, affines[rows])
                (g_x,) = torch.autograd.grad(chips, x, g_chips)
            out[rows] = g_x
        return out, None, None


class DlibTwin(nn.Module):
    """:class:`~deid.judges.identity_net.IdentityNet`'s function (up to float rounding) for a
    training step, frozen, arranged as the module docstring says. Built by
    :func:`training_twin`; :meth:`embed` is the differentiable path from images to
    embeddings, :meth:`forward` the one without autograd from chips."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.register_buffer("mean_rgb", net.mean_rgb.detach().clone(), persistent=False)
        self.scale = 255.0 / INPUT_DIVISOR
        w, b = _folded_conv(net.conv32_down)
        self.register_buffer("stem_w", w, persistent=False)
        self.register_buffer("stem_b", b, persistent=False)
        self.register_buffer("stem_phase", _phase_weight(w), persistent=False)
        self.blocks = []  # (stride, padding of conv1, down) per block; weights in buffers
        for i, blk in enumerate(net.blocks.values()):
            for j, conv in ((1, blk.conv1), (2, blk.conv2)):
                w, b = _folded_conv(conv)
                self.register_buffer(f"w{i}_{j}", w, persistent=False)
                self.register_buffer(f"b{i}_{j}", b, persistent=False)
            self.blocks.append((blk.conv1.conv.stride[0], blk.conv1.conv.padding[0],
                                bool(blk.down)))
        self.register_buffer("fc_w", net.fc.weight.detach().clone(), persistent=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(N, 128)`` of chips ``(N, 3, 150, 150)``; no autograd (see
        :meth:`embed` for the differentiable path)."""
        if chips.shape[-2:] != (INPUT_SIZE_PX, INPUT_SIZE_PX) or chips.shape[1] != 3:
            raise ValueError(f"expected (N, 3, {INPUT_SIZE_PX}, {INPUT_SIZE_PX}) chips, "
                             f"got {tuple(chips.shape)}")
        if torch.is_grad_enabled() and chips.requires_grad:
            raise RuntimeError("DlibTwin.forward has no autograd; use embed(images, affines)")
        return self.run(chips.contiguous(memory_format=torch.channels_last), save=False)[0]

    def embed(self, images: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(N, 128)`` of the dlib chips of ``images`` (``warp_to_chips``),
        differentiable in ``images`` (see :class:`_TwinRowsFunction`)."""
        affines = affines.to(device=images.device, dtype=images.dtype)
        if torch.is_grad_enabled() and images.requires_grad:
            return _TwinRowsFunction.apply(images, affines, self)
        return self(warp_to_chips(images, affines))

    def _block(self, i: int):
        return (getattr(self, f"w{i}_1"), getattr(self, f"b{i}_1"), getattr(self, f"w{i}_2"),
                getattr(self, f"b{i}_2"))

    @torch.no_grad()
    def run(self, x: torch.Tensor, save: bool):
        """``(embeddings, saved)``: the forward of ``IdentityNet`` (same operations and
        order, convolutions folded); ``saved`` the ReLU outputs (their positive entries are
        where a ReLU passes the gradient) and the max-pool indices."""
        saved = []
        z = F.relu_(F.conv2d((x - self.mean_rgb) * self.scale, self.stem_w, self.stem_b,
                             stride=2))
        cur, idx = F.max_pool2d(z, 3, 2, return_indices=True)
        if save:
            saved.append((z, idx))
        for i, (stride, pad, down) in enumerate(self.blocks):
            w1, b1, w2, b2 = self._block(i)
            h1 = F.relu_(F.conv2d(cur, w1, b1, stride=stride, padding=pad))
            out = F.conv2d(h1, w2, b2, padding=1)
            sc, dh, dw, dc = cur, 0, 0, 0
            if down:  # dlib's add_prev, as IdentityNet's _Residual
                sc = F.avg_pool2d(cur, 2, 2)
                dh, dw = sc.shape[-2] - out.shape[-2], sc.shape[-1] - out.shape[-1]
                if dh or dw:
                    out = F.pad(out, (0, dw, 0, dh))
                dc = out.shape[1] - sc.shape[1]
                if dc:
                    sc = F.pad(sc, (0, 0, 0, 0, 0, dc))
            out = F.relu_(out.add_(sc))
            if save:
                saved.append((h1, out, cur.shape[-3:], dh, dw, dc))
            cur = out
        emb = cur.mean(dim=(-2, -1)) @ self.fc_w.t()
        if save:
            saved.append(cur.shape[-2:])
        return emb, saved

    @torch.no_grad()
    def input_grad(self, grad: torch.Tensor, saved: list, rows: torch.Tensor) -> torch.Tensor:
        """Gradient to the chips ``rows`` from the embedding gradient ``grad (n, D)`` of those
        rows, by the saved activations (the adjoint of :meth:`run`, step by step)."""
        n = len(rows)
        r0 = int(rows[0])
        if bool((rows == torch.arange(r0, r0 + n, device=rows.device)).all()):
            rows = slice(r0, r0 + n)  # a block of rows (e.g. all of one pick): views, no copies
        hh, ww = saved[-1]
        g = (grad @ self.fc_w) / (hh * ww)
        g = g[:, :, None, None].expand(n, g.shape[1], hh, ww).contiguous(
            memory_format=torch.channels_last)
        for i in reversed(range(len(self.blocks))):
            stride, pad, down = self.blocks[i]
            h1, out, in_shape, dh, dw, dc = saved[1 + i]
            w1, _, w2, _ = self._block(i)
            h1 = h1[rows]
            g = torch.ops.aten.threshold_backward(g, out[rows], 0)  # ReLU's backward
            g_sc = g
            if down:
                g_sc = F.pad(g, (0, 0, 0, 0, 0, -dc)) if dc else g
                g = F.pad(g, (0, -dw, 0, -dh)) if dh or dw else g
                # adjoint of avg_pool2d(2, 2): a quarter to each pixel of its window
                up = (g_sc * 0.25).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
                ih, iw = in_shape[-2:]
                g_sc = F.pad(up, (0, iw - up.shape[-1], 0, ih - up.shape[-2])).contiguous(
                    memory_format=torch.channels_last)
            g = torch.ops.aten.threshold_backward(F.conv_transpose2d(g, w2, padding=1), h1, 0)
            op = (_transposed_output_padding(in_shape[-2], h1.shape[-2], w1.shape[-2], stride, pad),
                  _transposed_output_padding(in_shape[-1], h1.shape[-1], w1.shape[-1], stride, pad))
            g = F.conv_transpose2d(g, w1, stride=stride, padding=pad, output_padding=op) + g_sc
        z, idx = saved[0]
        z = z[rows]
        g = torch.ops.aten.max_pool2d_with_indices_backward(g, z, [3, 3], [2, 2], [0, 0],
                                                            [1, 1], False, idx[rows])
        g = torch.ops.aten.threshold_backward(g, z, 0)
        return _stride2_input_grad(g, self.stem_phase, (INPUT_SIZE_PX, INPUT_SIZE_PX)) \
            * self.scale


def training_twin(net: nn.Module) -> nn.Module:
    """The identity twin the training step runs: a :class:`DlibTwin` of ``net`` if ``net``
    is an :class:`~deid.judges.identity_net.IdentityNet` (checked on one random chip: it must
    give the same embedding to 1e-4), else ``net`` itself."""
    if isinstance(net, IdentityNet):
        w = net.fc.weight
        twin = DlibTwin(net).to(w.device)
        probe = torch.rand(1, 3, INPUT_SIZE_PX, INPUT_SIZE_PX, dtype=w.dtype,
                           generator=torch.Generator().manual_seed(0)).to(w.device)
        with torch.no_grad():
            ok = torch.allclose(twin(probe), net(probe), rtol=1e-4, atol=1e-4)
        if ok:
            return twin
        log.warning("the fast identity twin does not match IdentityNet; using IdentityNet")
    return net


def twin_embed(twin: nn.Module, images: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
    """Embeddings ``(N, D)`` of the dlib chips of ``images`` (``warp_to_chips``), through a
    :func:`training_twin`; differentiable in ``images``."""
    if isinstance(twin, DlibTwin):
        return twin.embed(images, affines)
    return twin(warp_to_chips(images, affines))
