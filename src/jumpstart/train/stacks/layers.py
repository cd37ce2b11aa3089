"""Stacked weights of a population of nets, with a hand-written backward.

A stack holds ``P`` members' weights zero-padded to the widest member (see
:mod:`jumpstart.train.population` for why padding is inert) and implements
``forward`` (logits ``(P, N)``; optionally recording the per-layer unit and
point maxima/minima the Jumpstart deficits need, with arg indices) and
``backward`` (gradients of the task loss plus the penalty, written into
``grads``).

Members may also differ in depth. The stack is as deep as its deepest member,
and a shallower member's extra layers are pass-through layers: identity
weights on its real units, zero bias, gradients zeroed before Adam. They are
exact: their input ``h`` is a ReLU output (``>= 0``), so ``relu(h I + 0) = h``
bit for bit; in backward they pass ``dh`` where ``h > 0`` and block it where
``h = 0``, where the member's last real layer blocks it anyway (ReLU's
gradient at ``g <= 0`` is 0). Their extremes are left out of the penalty (see
:attr:`_Stack.layer_mask`). A population of several depths costs one
``max(depth)``-deep pass per step instead of one pass per depth: it saves the
per-step overhead and costs the pass-through layers' arithmetic, a trade the
sweep planner weighs (:func:`jumpstart.experiments.sweep.plan`).

Two architectures:

- :class:`DenseStack`: :class:`~jumpstart.models.Rectangular` nets; a layer is
  ``g = h W^T + b``, run by the fused kernels of :mod:`.kernels` with
  activations kept feature-major, ``(D, P, W, N)``, each member at its width;
- :class:`MoonsConvStack`: :class:`~jumpstart.models.MoonsConv` nets (the
  CPAIOR Keras MOONS net), feature-major like the dense stack: the two
  positions are stacked along the point axis, ``h`` of shape ``(P, W, 2N)``
  (columns ``:N`` position 0, ``N:`` position 1), and a layer is
  ``g = W0 h + b`` plus ``W1 h[:, N:]`` on the position-0 columns (kernel
  (2, 1), one zero row padded at the bottom), as batched matmuls, with the
  extremes and the penalty gradient from the same per-member kernels as the
  dense stack (:func:`.kernels.layer_extremes`, :func:`.kernels.add_penalty_grad`).
  Deficits are per (position, channel) and per (sample, position):
  granularity ``"position"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...models import MoonsConv, Rectangular
from . import kernels


class _Stack:
    """Shared machinery: padding and depth masks, the extremes' buffers."""

    def __init__(self, widths: list[int], depths: list[int], rows_per_point: int) -> None:
        pop, wmax = len(widths), max(widths)
        self.pop, self.wmax, self.rows_per_point = pop, wmax, rows_per_point
        self.depth = max(depths)
        self.mask = torch.arange(wmax)[None, :] < torch.tensor(widths)[:, None]  # (P, W)
        # (D, P): layer l is one of member p's own layers (else pass-through)
        self.real = torch.arange(self.depth)[:, None] < torch.tensor(depths)[None, :]
        self.all_widths = self.mask.sum(1).numpy()  # (P,) int64
        self.depths = torch.tensor(depths).numpy()  # (P,) int64
        self.uniform = len(set(depths)) == 1
        self.keep_g = False  # set for tie-break "average", which needs g in backward
        self._buffers: dict[int, tuple] = {}
        self.regularize(pop)

    def regularize(self, count: int) -> None:
        """Only the first ``count`` members carry a penalty: the extremes and
        the penalty gradient are computed for them alone (a contiguous slice),
        so unregularized members (``lam = 0``) cost no reduction."""
        self.reg = count
        self.widths = self.all_widths[:count]
        self._buffers = {}

    def _extreme_buffers(self, points: int) -> tuple:
        """Stacked extremes of every layer for batches of ``points`` points:
        unit values and point indices ``(2, D, reg, R, W)`` ([0] max, [1] min),
        point values and unit indices ``(2, D, reg, R * points)``; reused
        across steps, with their NumPy views for :mod:`.kernels`."""
        if points not in self._buffers:
            d, reg, r = self.depth, self.reg, self.rows_per_point
            bufs = (torch.zeros(2, d, reg, r, self.wmax),
                    torch.zeros(2, d, reg, r, self.wmax, dtype=torch.long),
                    torch.zeros(2, d, reg, r * points),
                    torch.zeros(2, d, reg, r * points, dtype=torch.long))
            self._buffers[points] = bufs, tuple(t.numpy() for t in bufs)
        return self._buffers[points]

    def extremes(self, points: int) -> tuple[Tensor, Tensor]:
        """The last forward's extremes as fresh autograd leaves: unit max/min
        ``(2, D, reg, R * W)`` and point max/min ``(2, D, reg, R * points)``."""
        (u_val, _, p_val, _), _ = self._extreme_buffers(points)
        shape = (2, self.depth, self.reg, -1)
        return (u_val.view(shape).detach().requires_grad_(),
                p_val.view(shape).detach().requires_grad_())

    @property
    def layer_mask(self) -> Tensor:
        """``(D, reg)``, float: which layers are the regularized members' own."""
        return self.real[:, : self.reg].to(torch.get_default_dtype())

    @staticmethod
    def _identity(width: int, wmax: int) -> Tensor:
        """A pass-through layer's weight: identity on ``width`` real units."""
        eye = torch.zeros(wmax, wmax)
        eye[:width, :width] = torch.eye(width)
        return eye

    @property
    def unit_mask(self) -> Tensor:
        """``(reg, U)``: which of the regularized members' per-layer units are
        real (not padding)."""
        return self.mask[: self.reg].repeat(1, self.rows_per_point)


class DenseStack(_Stack):
    """``P`` Rectangular ReLU nets of one depth (one logit each), stacked."""

    def __init__(self, nets: list[Rectangular]) -> None:
        super().__init__([net.width for net in nets], [net.depth for net in nets],
                         rows_per_point=1)
        self.nets = nets
        pop, wmax = self.pop, self.wmax
        features = nets[0].linears[0].in_features

        def stack(get, rows, cols):
            w, b = torch.zeros(pop, rows, cols), torch.zeros(pop, rows)
            for p, net in enumerate(nets):
                lin = get(net)
                if lin is None:  # beyond this member's depth
                    w[p] = self._identity(net.width, wmax)
                    continue
                w[p, : lin.out_features, : lin.in_features] = lin.weight.detach()
                b[p, : lin.out_features] = lin.bias.detach()
            return w, b

        self.w_in, self.b_in = stack(lambda n: n.linears[0], wmax, features)
        hidden = [stack(lambda n, i=i: n.linears[i] if i < n.depth else None, wmax, wmax)
                  for i in range(1, self.depth)]
        self.w_hid = torch.stack([w for w, _ in hidden]) if hidden else torch.zeros(0, pop, wmax, wmax)
        self.b_hid = torch.stack([b for _, b in hidden]) if hidden else torch.zeros(0, pop, wmax)
        self.w_out, self.b_out = stack(lambda n: n.output, 1, wmax)
        self.params = [self.w_in, self.b_in, self.w_hid, self.b_hid, self.w_out, self.b_out]
        self.grads = [torch.zeros_like(t) for t in self.params]
        # NumPy views (same memory) for the kernels; Adam updates params in place
        self._arrays = [t.numpy() for t in self.params]
        self._grad_arrays = [t.numpy() for t in self.grads]
        self._no_coef = torch.zeros(2, 1, 1, 1).numpy()
        self._acts: dict[int, tuple] = {}

    def _layer(self, layer: int) -> tuple[Tensor, Tensor]:
        return (self.w_in, self.b_in) if layer == 0 else (self.w_hid[layer - 1],
                                                         self.b_hid[layer - 1])

    def _input(self, x: Tensor) -> Tensor:
        return x.expand(self.pop, *x.shape) if x.dim() == 2 else x

    def _activations(self, points: int) -> tuple:
        """Buffers for batches of ``points`` points, feature-major: activations
        ``(D, P, W, N)`` (padded rows stay 0), pre-activations (kept for
        tie-break ``average``, else empty) and two ``(W, N)`` scratch arrays."""
        if points not in self._acts:
            shape = (self.depth, self.pop, self.wmax, points)
            self._acts[points] = (torch.zeros(shape).numpy(),
                                  torch.zeros(shape if self.keep_g else (0, 0, 0, 0)).numpy(),
                                  torch.zeros(self.wmax, points).numpy(),
                                  torch.zeros(self.wmax, points).numpy())
        return self._acts[points]

    def _features(self, x: Tensor) -> Tensor:
        """``x`` ``(N, F)`` or ``(P, N, F)`` as contiguous ``(P, F, N)``."""
        return self._input(x).transpose(1, 2).contiguous()

    def forward(self, x: Tensor, extremes: bool = False) -> Tensor:
        """Logits ``(P, N)`` for ``x`` of shape ``(N, F)`` (shared) or ``(P, N, F)``,
        each member at its own width (:func:`.kernels.dense_forward`); the
        inputs and activations are kept for :meth:`backward`, ``extremes``
        records the per-layer extremes (:meth:`extremes`)."""
        xt = self._xt = self._features(x)
        hs, gs, scratch, _ = self._activations(xt.shape[2])
        logits = torch.empty(self.pop, xt.shape[2])
        kernels.dense_forward(xt.numpy(), *self._arrays, self.all_widths, self.reg, extremes,
                              *self._extreme_buffers(xt.shape[2])[1], hs, gs, logits.numpy(),
                              scratch)
        return logits

    def backward(self, x: Tensor, dz: Tensor, penalty=None) -> None:
        """Write gradients into ``grads`` given d loss / d logits ``dz`` ``(P, N)``
        (:func:`.kernels.dense_backward`); ``penalty = (coefs, average)`` adds
        the penalty's share, ``coefs`` being the gradients of the two leaves
        of :meth:`extremes`. Uses the inputs and activations of the last
        :meth:`forward`, which must have been on the same ``x``."""
        xt = self._xt
        hs, gs, dh, dh_prev = self._activations(xt.shape[2])
        u_val, u_idx, p_val, p_idx = self._extreme_buffers(xt.shape[2])[1]
        average = penalty is not None and penalty[1]
        u_coef, p_coef = ((c.numpy() for c in penalty[0]) if penalty is not None
                          else (self._no_coef, self._no_coef))
        w_in, _, w_hid, _, w_out, _ = self._arrays
        kernels.dense_backward(xt.numpy(), w_in, w_hid, w_out, self.all_widths, self.depths, hs,
                               gs, dz.contiguous().numpy(), self.reg, penalty is not None,
                               average, u_val, u_idx, u_coef, p_val, p_idx, p_coef,
                               *self._grad_arrays, dh, dh_prev)

    def member(self, p: int) -> nn.Module:
        """Member ``p`` as its standalone Rectangular with the trained weights."""
        net = self.nets[p]
        with torch.no_grad():
            for layer in range(net.depth + 1):
                lin = net.output if layer == net.depth else net.linears[layer]
                w, b = (self.w_out, self.b_out) if layer == net.depth else self._layer(layer)
                lin.weight.copy_(w[p, : lin.out_features, : lin.in_features])
                lin.bias.copy_(b[p, : lin.out_features])
        return net


class MoonsConvStack(_Stack):
    """``P`` MoonsConv nets (Keras MOONS formulation) of one depth, stacked."""

    def __init__(self, nets: list[MoonsConv]) -> None:
        super().__init__([net.width for net in nets], [net.depth for net in nets],
                         rows_per_point=2)
        self.nets = nets
        pop, wmax = self.pop, self.wmax
        # per layer: W0 (tap on the row itself), W1 (tap on the row below), bias
        self.w0 = torch.zeros(self.depth, pop, wmax, wmax)
        self.w1 = torch.zeros(self.depth, pop, wmax, wmax)
        self.b = torch.zeros(self.depth, pop, wmax)
        self.w_out = torch.zeros(pop, 2, wmax)  # (position, channel)
        self.b_out = torch.zeros(pop, 1)
        for p, net in enumerate(nets):
            for layer, conv in enumerate(net.convs):
                cout, cin = conv.weight.shape[:2]
                self.w0[layer, p, :cout, :cin] = conv.weight.detach()[:, :, 0, 0]
                self.w1[layer, p, :cout, :cin] = conv.weight.detach()[:, :, 1, 0]
                self.b[layer, p, :cout] = conv.bias.detach()
            for layer in range(net.depth, self.depth):
                self.w0[layer, p] = self._identity(net.width, wmax)
            w = net.output.weight.detach().view(net.width, 2)  # flatten index c*2 + pos
            self.w_out[p, :, : net.width] = w.t()
            self.b_out[p] = net.output.bias.detach()
        self.params = [self.w0, self.w1, self.b, self.w_out, self.b_out]
        self.grads = [torch.zeros_like(t) for t in self.params]
        self.gs: list[Tensor] = []
        self.hs: list[Tensor] = []

    def _record(self, g: Tensor, h: Tensor, layer: int, extremes: bool) -> None:
        """Keep what backward needs: the activation, the layer's extremes
        (computed now, while ``g`` is hot in cache) and ``g`` only if asked."""
        self.hs.append(h)
        if extremes:
            g_reg = g[: self.reg]
            kernels.layer_extremes(g_reg.numpy(), self.widths, layer, self.rows_per_point,
                                   *self._extreme_buffers(g.shape[2] // self.rows_per_point)[1])
            if self.keep_g:
                self.gs.append(g)

    def add_penalty_grad(self, dg: Tensor, layer: int, coefs, average: bool) -> None:
        """Route d penalty / d extremes (``coefs``: the gradients of the two
        leaves of :meth:`extremes`) to the extreme elements of layer ``layer``
        (``single``) or split them over ties (``average``), in place in ``dg``."""
        dg_reg = dg[: self.reg]  # a leading slice: the adds land in the caller's dg
        g_reg = self.gs[layer][: self.reg] if average else dg_reg
        points = dg.shape[2] // self.rows_per_point
        u_val, u_idx, p_val, p_idx = self._extreme_buffers(points)[1]
        kernels.add_penalty_grad(dg_reg.numpy(), g_reg.numpy(), average, self.widths, layer,
                                 self.rows_per_point, u_val, u_idx, coefs[0].numpy(), p_val,
                                 p_idx, coefs[1].numpy())

    def _freeze_pass_through(self, *grads: Tensor) -> None:
        """Zero the gradients of pass-through layers; each of ``grads`` is
        ``(D', P, ...)`` for the last ``D'`` layers."""
        if self.uniform:
            return
        for grad in grads:
            real = self.real[self.depth - grad.shape[0]:]
            grad.mul_(real.view(*real.shape, *[1] * (grad.dim() - 2)))

    def _input(self, x: Tensor) -> Tensor:
        """Points ``(N, 2)`` as the first layer's input ``(P, W, 2N)``
        (feature-major): the coordinate of each position in channel 0, zeros
        elsewhere."""
        if x.dim() != 2:
            raise ValueError("MoonsConv populations train full batch (x of shape (N, 2))")
        h = x.new_zeros(self.pop, self.wmax, 2 * x.shape[0])
        h[:, 0, :] = x.t().reshape(-1)
        return h

    def forward(self, x: Tensor, extremes: bool = False) -> Tensor:
        """Logits ``(P, N)`` for points ``x`` of shape ``(N, 2)``; see
        :meth:`DenseStack.forward`. Activations are feature-major, ``(P, W, 2N)``."""
        self.gs, self.hs, n = [], [], x.shape[0]
        h = self._input(x)
        self.h_in = h
        for layer in range(self.depth):
            g = torch.baddbmm(self.b[layer].unsqueeze(2), self.w0[layer], h)
            g[:, :, :n].baddbmm_(self.w1[layer], h[:, :, n:])
            h = torch.relu(g)
            self._record(g, h, layer, extremes)
        out = (h.view(self.pop, self.wmax, 2, n) * self._w_out_t().unsqueeze(3)).sum((1, 2))
        return out + self.b_out

    def _w_out_t(self) -> Tensor:
        """The output weights as ``(P, W, 2)`` (unit, position)."""
        return self.w_out.transpose(1, 2)

    def backward(self, x: Tensor, dz: Tensor, penalty=None) -> None:
        """Write gradients into ``grads``; see :meth:`DenseStack.backward`."""
        g_w0, g_w1, g_b, g_w_out, g_b_out = self.grads
        n = x.shape[0]
        h4 = self.hs[-1].view(self.pop, self.wmax, 2, n)
        g_w_out.copy_(torch.sum(h4 * dz.view(self.pop, 1, 1, n), 3).transpose(1, 2))
        torch.sum(dz, 1, keepdim=True, out=g_b_out)
        dh = (self._w_out_t().unsqueeze(3) * dz.view(self.pop, 1, 1, n)).reshape(
            self.pop, self.wmax, 2 * n)
        for layer in range(self.depth - 1, -1, -1):
            dg = torch.ops.aten.threshold_backward(dh, self.hs[layer], 0)
            if penalty is not None:
                self.add_penalty_grad(dg, layer, *penalty)
            h_prev = self.h_in if layer == 0 else self.hs[layer - 1]
            torch.bmm(dg, h_prev.transpose(1, 2), out=g_w0[layer])
            torch.bmm(dg[:, :, :n], h_prev[:, :, n:].transpose(1, 2), out=g_w1[layer])
            torch.sum(dg, 2, out=g_b[layer])
            if layer > 0:
                dh = torch.bmm(self.w0[layer].transpose(1, 2), dg)
                dh[:, :, n:].baddbmm_(self.w1[layer].transpose(1, 2), dg[:, :, :n])
        self._freeze_pass_through(g_w0, g_w1, g_b)

    def member(self, p: int) -> nn.Module:
        """Member ``p`` as its standalone MoonsConv with the trained weights."""
        net = self.nets[p]
        with torch.no_grad():
            for layer, conv in enumerate(net.convs):
                cout, cin = conv.weight.shape[:2]
                conv.weight[:, :, 0, 0] = self.w0[layer, p, :cout, :cin]
                conv.weight[:, :, 1, 0] = self.w1[layer, p, :cout, :cin]
                conv.bias.copy_(self.b[layer, p, :cout])
            net.output.weight.copy_(self.w_out[p, :, : net.width].t().reshape(1, -1))
            net.output.bias.copy_(self.b_out[p])
        return net
