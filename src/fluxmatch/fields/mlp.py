"""Multilayer perceptron fields with SiLU activations, optionally conditioned on σ or t."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError

CONDITIONINGS = (None, "sigma", "time")


class MLPField(nn.Module):
    """A vector field ``f(x, c)`` on R^d given by an MLP with SiLU activations.

    Args:
        dim: number of coordinates d of one point (inputs of any event shape with d entries
            are flattened and the output is given back in the input's shape).
        hidden: widths of the hidden layers, e.g. (128, 128).
        conditioning: None (``c`` is ignored), "sigma" (``c`` is the noise level σ > 0, fed as
            ln σ / 4 as in EDM's c_noise) or "time" (``c`` is t ∈ [0, 1], fed as is).
        heads: outputs per point in units of d: 1 gives a field shaped like ``x``; k > 1 gives
            (B, k·d), head j in entries j·d … (j+1)·d − 1 (the two heads of
            :class:`~fluxmatch.fields.precond.EDMSplit`).

    Shapes: ``x`` (B, ...) with d entries per row; ``c`` a scalar or (B,) tensor; output like ``x``
    (one head).

    Example:
        >>> f = MLPField(2, (128, 128))
        >>> f(torch.randn(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (128, 128), conditioning: str | None = None, heads: int = 1) -> None:
        super().__init__()
        if dim < 1 or heads < 1:
            raise FluxMatchError(f"field dimension and heads must be positive, got dim {dim}, heads {heads}")
        self.heads = int(heads)
        if conditioning not in CONDITIONINGS:
            raise FluxMatchError(f"unknown conditioning {conditioning!r}: expected one of {CONDITIONINGS}")
        self.dim = int(dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.conditioning = conditioning
        widths = [self.dim + (conditioning is not None), *self.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], self.heads * self.dim))
        self.net = nn.Sequential(*layers)

    @property
    def config(self) -> dict:
        """What :func:`fluxmatch.fields.build_field` needs to rebuild this field."""
        heads = {"heads": self.heads} if self.heads != 1 else {}
        return {"type": "mlp", "dim": self.dim, "hidden": list(self.hidden), "conditioning": self.conditioning, **heads}

    def _inputs(self, x: torch.Tensor, c) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise FluxMatchError(f"this field takes points with {self.dim} coordinates, got shape {tuple(x.shape)}")
        if self.conditioning is not None:
            if c is None:
                raise FluxMatchError(f"this field is conditioned on {self.conditioning}: pass it as the second argument")
            c = torch.as_tensor(c, dtype=flat.dtype, device=flat.device).reshape(-1)
            if self.conditioning == "sigma" and not bool((c > 0).all() and torch.isfinite(c).all()):
                raise FluxMatchError("a σ-conditioned field takes positive finite noise levels σ (its input feature is ln σ / 4)")
            feature = c.log() / 4 if self.conditioning == "sigma" else c
            flat = torch.cat([flat, feature.expand(flat.shape[0])[:, None]], dim=1)
        return flat

    def forward(self, x: torch.Tensor, c: torch.Tensor | float | None = None) -> torch.Tensor:
        out = self.net(self._inputs(x, c))
        return out.reshape(x.shape) if self.heads == 1 else out

    def forward_and_jvp(self, x: torch.Tensor, c, tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x) and the Jacobian-vector products (∂f/∂x) t_k, by forward-mode propagation.

        Args:
            x: (B, ...) points with d entries each.
            c: conditioning (as in :meth:`forward`); its input has zero tangent.
            tangents: (B, k, d) directions.

        Returns:
            f(x) shaped like x, and (B, k, d) products. Both are differentiable in x, which is
            what makes ∇(∇·f) cost one backward pass instead of d + 1.
        """
        if self.heads != 1:
            raise FluxMatchError(f"forward-mode products need a one-headed field; this MLP has {self.heads} heads")
        h = self._inputs(x, c)
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        t = tangents @ linears[0].weight[:, : self.dim].T
        for i, layer in enumerate(linears):
            pre = h @ layer.weight.T + layer.bias
            if i > 0:
                t = t @ layer.weight.T
            if i == len(linears) - 1:
                return pre.reshape(x.shape), t
            gate = torch.sigmoid(pre)
            h = pre * gate
            t = t * (gate * (1 + pre * (1 - gate)))[:, None, :]  # silu'(pre)
        raise AssertionError("unreachable: the network ends with a linear layer")


class MLPPotential(nn.Module):
    """A scalar potential ``g(x, c)`` (MLP with SiLU) whose input-gradient ∇g is a conservative field.

    Used by Flux Matching's potential estimator to represent the gradient part ∇φ of u = f − s.

    Args:
        dim, hidden, conditioning: as for :class:`MLPField`.

    Shapes: ``x`` (B, ...) with d entries per row → (B,) values; :meth:`gradient` → like ``x``.
    It is not class-conditional: ``labels`` (the potential interface's argument) must be None.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (128, 128), conditioning: str | None = None) -> None:
        super().__init__()
        self.body = MLPField(dim, hidden, conditioning)
        widths = self.body.net[-1].in_features
        self.body.net[-1] = nn.Linear(widths, 1)

    @property
    def conditioning(self) -> str | None:
        """What ``c`` carries: None, "sigma" or "time" (as for :class:`MLPField`)."""
        return self.body.conditioning

    @property
    def config(self) -> dict:
        return {**self.body.config, "type": "mlp_potential"}

    def forward(self, x: torch.Tensor, c=None, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            raise FluxMatchError("an MLPPotential is not class-conditional: it takes no labels (use a PreconditionedPotential with classes)")
        return self.body.net(self.body._inputs(x, c))[:, 0]

    def gradient(self, x: torch.Tensor, c=None, labels: torch.Tensor | None = None, create_graph: bool = True) -> torch.Tensor:
        """∇_x g(x, c), shaped like x; differentiable in the parameters when ``create_graph``.
        ``labels`` must be None (the potential is unconditional on classes)."""
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self(z, c, labels).sum(), z, create_graph=create_graph)
        return grad
