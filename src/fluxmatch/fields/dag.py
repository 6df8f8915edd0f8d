"""A field on R^d structured by a directed acyclic graph: output i sees only the inputs i's parents (and i).

The graph is an adjacency matrix A (d × d, 0/1): A[j, i] = 1 is an edge j → i, and lets output
i depend on x_j; with ``include_self`` output i also depends on x_i. The field is a block-masked
MLP: every variable i has its own block of ``hidden[k]`` units in layer k; the first layer's
block i reads only the inputs row i of the dependency mask allows (and the conditioning
feature), later layers connect block i to block i only, and output i reads block i. This is d
separate MLPs evaluated together, so it realises any dependency mask exactly: ∂f_i/∂x_j = 0
wherever the mask forbids it.

The helpers check a graph (:func:`check_dag`), give its ancestors (:func:`transitive_closure`)
and the field's dependency mask (:func:`dependency_mask`), and read a graph written for the
command line, "0>1,1>2" (:func:`parse_graph`).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

from ..errors import FluxMatchError
from .transformer import check_conditioning, conditioning_feature, positive_int


def _as_matrix(adjacency) -> torch.Tensor:
    """``adjacency`` (nested lists, array or tensor of 0/1) as a (d, d) bool tensor; raise if it is not one."""
    try:
        matrix = torch.as_tensor(np.asarray(adjacency.detach().cpu() if isinstance(adjacency, torch.Tensor) else adjacency))
    except (TypeError, ValueError, RuntimeError):
        raise FluxMatchError(f"an adjacency matrix must be a square 0/1 array, got {type(adjacency).__name__} that is not a numeric array") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise FluxMatchError(f"an adjacency matrix must be 2-D and square (d, d), got shape {tuple(matrix.shape)}")
    if matrix.shape[0] < 1:
        raise FluxMatchError("an adjacency matrix needs at least one node (d ≥ 1), got shape (0, 0)")
    if matrix.dtype == torch.bool:
        return matrix
    if matrix.is_complex():
        raise FluxMatchError(f"an adjacency matrix must hold 0/1 entries, got dtype {matrix.dtype}")
    bad = (matrix != 0) & (matrix != 1)
    if bool(bad.any()):
        j, i = (int(k) for k in bad.nonzero()[0])
        raise FluxMatchError(f"an adjacency matrix must hold 0/1 entries (A[j][i] = 1: an edge j → i), got {matrix[j, i].item()!r} at [{j}][{i}]")
    return matrix == 1


def _find_cycle(matrix: torch.Tensor) -> list[int] | None:
    """The nodes of one directed cycle of the (d, d) bool graph, first node repeated at the end; None if acyclic."""
    children = [row.nonzero().flatten().tolist() for row in matrix]
    state = [0] * len(children)  # 0 unseen, 1 on the current path, 2 done
    for root in range(len(children)):
        if state[root]:
            continue
        path, stack = [root], [iter(children[root])]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[child] == 1:
                return path[path.index(child) :] + [child]
            elif state[child] == 0:
                state[child] = 1
                path.append(child)
                stack.append(iter(children[child]))
    return None


def check_dag(adjacency) -> torch.Tensor:
    """The adjacency matrix as a (d, d) bool tensor, checked to be a directed acyclic graph.

    Args:
        adjacency: (d, d) 0/1 entries (nested lists, numpy array or tensor; bool or integer);
            ``adjacency[j][i] = 1`` is an edge j → i.

    Raises:
        FluxMatchError: if it is not 2-D and square, has no node, has entries other than 0/1,
            has a nonzero diagonal, or has a cycle (named by its nodes).

    Example:
        >>> check_dag([[0, 1], [0, 0]])
        tensor([[False,  True],
                [False, False]])
    """
    matrix = _as_matrix(adjacency)
    loops = matrix.diagonal().nonzero().flatten().tolist()
    if loops:
        raise FluxMatchError(f"an adjacency matrix must have a zero diagonal, got an edge from node {loops[0]} to itself: whether output i sees x_i is set by include_self, not by the graph")
    cycle = _find_cycle(matrix)
    if cycle is not None:
        raise FluxMatchError(f"the graph must be acyclic, got the cycle {' → '.join(str(k) for k in cycle)}")
    return matrix


def transitive_closure(adjacency) -> torch.Tensor:
    """(d, d) bool tensor R of ancestors: R[j, i] is True iff there is a directed path j → … → i.

    Example:
        >>> transitive_closure([[0, 1, 0], [0, 0, 1], [0, 0, 0]]).int()
        tensor([[0, 1, 1],
                [0, 0, 1],
                [0, 0, 0]], dtype=torch.int32)
    """
    reach = check_dag(adjacency).clone()
    for k in range(reach.shape[0]):  # Warshall: paths through nodes 0..k
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    return reach


def dependency_mask(adjacency, include_self: bool = True) -> torch.Tensor:
    """(d, d) bool tensor M with M[i, j] True iff output i may depend on input j: j is a parent of i
    (an edge j → i), or j = i when ``include_self``. Note the transpose: M = Aᵀ (+ I).

    Example:
        >>> dependency_mask([[0, 1], [0, 0]]).int()
        tensor([[1, 0],
                [1, 1]], dtype=torch.int32)
    """
    mask = check_dag(adjacency).T.clone()
    if include_self:
        mask |= torch.eye(mask.shape[0], dtype=torch.bool)
    return mask


_EDGE = re.compile(r"(\d+)\s*>\s*(\d+)")


#: The most nodes a graph read from text may have when its size is not given.
MAX_NODES = 4096


def parse_graph(text: str, d: int | None = None) -> torch.Tensor:
    """The (d, d) bool adjacency matrix of a graph written "j>i,…" (0-based nodes, edges j → i).

    Args:
        text: comma-separated edges such as "0>1, 1>2" (whitespace is ignored); "" for no edges.
        d: the number of nodes (None: the largest index + 1).

    Returns:
        the adjacency, checked by :func:`check_dag`.

    Example:
        >>> parse_graph("0>1, 1>2").int()
        tensor([[0, 1, 0],
                [0, 0, 1],
                [0, 0, 0]], dtype=torch.int32)
    """
    if not isinstance(text, str):
        raise FluxMatchError(f"a graph is text such as '0>1,1>2', got {type(text).__name__}")
    edges = []
    for part in text.split(",") if text.strip() else []:
        match = _EDGE.fullmatch(part.strip())
        if match is None:
            raise FluxMatchError(f"bad edge {part.strip()!r} in the graph {text!r}: write edges as 'j>i' (0-based node indices), separated by commas, e.g. '0>1,1>2'")
        edges.append((int(match[1]), int(match[2])))
    if d is None:
        if not edges:
            raise FluxMatchError("a graph without edges needs its number of nodes: give d")
        d = max(max(edge) for edge in edges) + 1
        if d > MAX_NODES:
            raise FluxMatchError(f"the graph {text!r} names node {d - 1}: graphs of at most {MAX_NODES} nodes are supported")
    d = positive_int(d, "the number of nodes d")
    matrix = torch.zeros(d, d, dtype=torch.bool)
    for j, i in edges:
        if max(j, i) >= d:
            raise FluxMatchError(f"edge {j}>{i} names node {max(j, i)}, out of range for a graph of {d} nodes (0..{d - 1})")
        matrix[j, i] = True
    return check_dag(matrix)


class DAGField(nn.Module):
    """A vector field ``f(x, c)`` on R^d whose output i depends only on x_j for parents j of i (and x_i).

    Args:
        adjacency: (d, d) 0/1 matrix (nested lists, numpy array, tensor), ``adjacency[j][i] = 1``
            an edge j → i; or graph text for :func:`parse_graph` ("0>1,1>2").
        hidden: units per variable in each hidden layer (layer k has d · hidden[k] units).
        conditioning: None, "sigma" or "time", as for :class:`~fluxmatch.fields.MLPField`
            (feature ln σ / 4 or t, fed to every variable's block).
        include_self: output i also depends on x_i.

    Attributes: ``dim`` (d), ``conditioning``, ``adjacency`` (d, d) bool, ``mask`` (d, d) bool,
    the dependency mask of :func:`dependency_mask`, ``config``.

    Shapes: ``x`` (B, ...) with d entries per row; ``c`` a scalar or (B,) tensor; output like ``x``.

    Example:
        >>> f = DAGField([[0, 1, 0], [0, 0, 1], [0, 0, 0]], hidden=(16,))
        >>> f(torch.randn(5, 3)).shape
        torch.Size([5, 3])
    """

    def __init__(self, adjacency, hidden: tuple[int, ...] = (64, 64), conditioning: str | None = None, include_self: bool = True) -> None:
        super().__init__()
        graph = parse_graph(adjacency) if isinstance(adjacency, str) else check_dag(adjacency)
        if not isinstance(include_self, bool):
            raise FluxMatchError(f"include_self must be True or False, got {include_self!r}")
        if isinstance(hidden, (int, str)) or not hasattr(hidden, "__iter__"):
            raise FluxMatchError(f"hidden must be a sequence of widths such as (64, 64), got {hidden!r}")
        self.hidden = tuple(positive_int(h, "a hidden width") for h in hidden)
        if not self.hidden:
            raise FluxMatchError("a DAG field needs at least one hidden layer, got hidden=()")
        self.conditioning, self.include_self = check_conditioning(conditioning), include_self
        self.dim = d = graph.shape[0]
        self.register_buffer("adjacency", graph, persistent=False)
        self.register_buffer("mask", dependency_mask(graph, include_self), persistent=False)
        self.register_buffer("input_mask", self.mask.to(torch.get_default_dtype())[:, None, :], persistent=False)  # (d, 1, d)
        fan_in = self.mask.sum(1).clamp(min=1).to(torch.get_default_dtype()) + (conditioning is not None)  # (d,)
        bound = fan_in.rsqrt()[:, None, None]
        self.w_in = nn.Parameter((torch.rand(d, self.hidden[0], d) * 2 - 1) * bound)
        self.b_in = nn.Parameter((torch.rand(d, 1, self.hidden[0]) * 2 - 1) * bound)
        self.w_cond = nn.Parameter((torch.rand(d, 1, self.hidden[0]) * 2 - 1) * bound) if conditioning is not None else None
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(self.hidden[:-1], self.hidden[1:]):
            self.weights.append(nn.Parameter((torch.rand(d, a, b) * 2 - 1) / math.sqrt(a)))
            self.biases.append(nn.Parameter((torch.rand(d, 1, b) * 2 - 1) / math.sqrt(a)))
        self.w_out = nn.Parameter((torch.rand(d, self.hidden[-1]) * 2 - 1) / math.sqrt(self.hidden[-1]))
        self.b_out = nn.Parameter((torch.rand(d) * 2 - 1) / math.sqrt(self.hidden[-1]))

    @property
    def config(self) -> dict:
        """What :func:`fluxmatch.fields.build_field` needs to rebuild this field."""
        return {"type": "dag", "adjacency": self.adjacency.int().tolist(), "hidden": list(self.hidden), "conditioning": self.conditioning, "include_self": self.include_self}

    def forward(self, x: torch.Tensor, c: torch.Tensor | float | None = None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise FluxMatchError(f"this DAG field takes points with {self.dim} coordinates (one per node), got shape {tuple(x.shape)}")
        h = torch.einsum("bj,ihj->ibh", flat, self.w_in * self.input_mask.to(flat.dtype)) + self.b_in  # (d, B, hidden[0])
        feature = conditioning_feature(self.conditioning, c, flat.shape[0], flat.dtype, flat.device)
        if feature is not None:
            h = h + feature[None, :, None] * self.w_cond
        h = nn.functional.silu(h)
        for weight, bias in zip(self.weights, self.biases):
            h = nn.functional.silu(torch.baddbmm(bias, h, weight))  # block i → block i only
        return (torch.einsum("ibh,ih->bi", h, self.w_out) + self.b_out).reshape(x.shape)
