"""DAG-structured fields: exact dependency masks, graph checks and helpers, EDM wrapping, config, clear errors."""

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import FIELD_TYPES, DAGField, EDMPreconditioned, build_field, call_field, check_dag, dependency_mask, parse_graph, transitive_closure

CHAIN = [[0, 1, 0], [0, 0, 1], [0, 0, 0]]  # 0 → 1 → 2


def _random_dag(d: int, seed: int) -> torch.Tensor:
    """A random DAG on d nodes: a random order, each forward edge present with probability ½."""
    gen = torch.Generator().manual_seed(seed)
    upper = (torch.rand(d, d, generator=gen) < 0.5).triu(1)
    order = torch.randperm(d, generator=gen)
    return upper[order][:, order]


def _row_jacobians(f, x: torch.Tensor) -> torch.Tensor:
    """(B, d, d) Jacobians ∂f(x_b)/∂x_b of a field on (B, d) points."""
    jac = jacobian(f, x)  # (B, d, B, d)
    return torch.stack([jac[b, :, b] for b in range(x.shape[0])])


def _assert_exact_mask(f, mask: torch.Tensor, d: int) -> None:
    jac = _row_jacobians(f, torch.randn(4, d, dtype=torch.float64)).abs()
    assert bool((jac[:, ~mask] == 0).all()), "an output depends on an input the graph forbids"
    assert bool((jac[:, mask] > 1e-10).all()), "an allowed dependence is missing"


@pytest.mark.parametrize("include_self", [True, False])
def test_the_chain_field_sees_parents_and_itself_only(include_self):
    torch.manual_seed(0)
    f = DAGField(CHAIN, hidden=(8, 8), include_self=include_self).double()
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    if not include_self:
        expected &= ~torch.eye(3, dtype=torch.bool)
    assert torch.equal(f.mask, expected) and torch.equal(f.adjacency, torch.tensor(CHAIN).bool())
    _assert_exact_mask(f, expected, 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_random_dag_field_realises_its_mask_exactly(seed):
    adjacency = _random_dag(5, seed)
    torch.manual_seed(seed)
    f = DAGField(adjacency, hidden=(8, 8, 8), conditioning="time").double()
    t = torch.rand(4, dtype=torch.float64)
    _assert_exact_mask(lambda y: f(y, t), dependency_mask(adjacency), 5)


def test_the_edm_wrapped_field_keeps_the_mask():
    adjacency = _random_dag(5, 3)
    torch.manual_seed(0)
    field = EDMPreconditioned(DAGField(adjacency, hidden=(8,), conditioning="sigma"), sigma_data=0.5).double()
    sigma = torch.exp(torch.randn(4, dtype=torch.float64))
    _assert_exact_mask(lambda y: field(y, sigma), dependency_mask(adjacency), 5)


def test_shapes_conditioning_and_inputs_of_every_kind():
    f = DAGField(np.array(CHAIN), hidden=(8,), conditioning="sigma")
    x = torch.randn(5, 3)
    assert f(x, 0.5).shape == x.shape and call_field(f, x, torch.ones(5)).shape == x.shape
    assert (f.dim, f.conditioning) == (3, "sigma")
    for adjacency in (torch.tensor(CHAIN, dtype=torch.bool), torch.tensor(CHAIN), np.array(CHAIN, dtype=bool), "0>1,1>2"):
        assert DAGField(adjacency, hidden=(4,)).config["adjacency"] == CHAIN
    with pytest.raises(FluxMatchError, match="3 coordinates"):
        f(torch.randn(5, 4), 0.5)
    with pytest.raises(FluxMatchError, match="conditioned on sigma"):
        f(x)
    with pytest.raises(FluxMatchError, match="positive finite noise levels"):
        f(x, 0.0)
    assert DAGField([[0]], hidden=(4,))(torch.randn(2, 1)).shape == (2, 1)  # one node


@pytest.mark.parametrize(
    ("adjacency", "message"),
    [
        ([[0, 1, 0], [0, 0, 1]], r"2-D and square \(d, d\), got shape \(2, 3\)"),
        ([0, 1], r"2-D and square \(d, d\), got shape \(2,\)"),
        (np.zeros((2, 2, 2)), r"2-D and square"),
        (np.zeros((0, 0)), r"at least one node"),
        ([[0, 2], [0, 0]], r"0/1 entries .* got 2 at \[0\]\[1\]"),
        ([[0, 0.5], [0, 0]], r"0/1 entries .* got 0.5 at \[0\]\[1\]"),
        ([["a", "b"], ["c", "d"]], r"square 0/1 array"),
        ([[0, 1], [0, 1]], r"zero diagonal, got an edge from node 1 to itself: .*include_self"),
        ([[0, 1, 0], [0, 0, 1], [1, 0, 0]], r"acyclic, got the cycle 0 → 1 → 2 → 0"),
        ([[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]], r"acyclic, got the cycle 1 → 2 → 3 → 1"),
    ],
)
def test_bad_adjacency_matrices_are_refused_by_name(adjacency, message):
    with pytest.raises(FluxMatchError, match=message):
        check_dag(adjacency)
    with pytest.raises(FluxMatchError, match=message):
        DAGField(adjacency)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": ()}, "at least one hidden layer"),
        ({"hidden": 64}, "sequence of widths"),
        ({"hidden": (0,)}, "hidden width must be a positive integer"),
        ({"conditioning": "noise"}, "unknown conditioning"),
        ({"include_self": 1}, "include_self must be True or False"),
    ],
)
def test_bad_field_arguments_are_named(kwargs, message):
    with pytest.raises(FluxMatchError, match=message):
        DAGField(CHAIN, **kwargs)


def test_config_round_trip():
    assert FIELD_TYPES["dag"] is DAGField
    f = DAGField(_random_dag(5, 1), hidden=(8, 4), conditioning="sigma", include_self=False)
    config = f.config
    assert config["type"] == "dag" and config["hidden"] == [8, 4] and config["include_self"] is False and config["conditioning"] == "sigma"
    assert all(isinstance(v, int) for row in config["adjacency"] for v in row)
    g = build_field(config)
    g.load_state_dict(f.state_dict())
    x, sigma = torch.randn(6, 5), torch.exp(torch.randn(6))
    assert torch.equal(f(x, sigma), g(x, sigma)) and torch.equal(f.mask, g.mask)
    edm = EDMPreconditioned(f)
    rebuilt = build_field(edm.config)
    rebuilt.load_state_dict(edm.state_dict())
    assert torch.equal(edm(x, sigma), rebuilt(x, sigma))


def test_transitive_closure_and_dependency_mask():
    closure = transitive_closure([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]])  # 0 → 1 → 2 ← 3
    expected = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    assert closure.dtype == torch.bool and torch.equal(closure, expected)
    adjacency = _random_dag(6, 4)
    reach = transitive_closure(adjacency)
    power, paths = adjacency.long(), torch.zeros(6, 6, dtype=torch.long)
    for _ in range(6):
        paths, power = paths + power, power @ adjacency.long()
    assert torch.equal(reach, paths > 0)
    assert torch.equal(dependency_mask(CHAIN, include_self=False), torch.tensor(CHAIN).bool().T)
    assert torch.equal(dependency_mask(CHAIN), torch.tensor(CHAIN).bool().T | torch.eye(3, dtype=torch.bool))


def test_parse_graph():
    assert torch.equal(parse_graph("0>1,1>2"), torch.tensor(CHAIN).bool())
    assert torch.equal(parse_graph(" 0 > 1 ,  1>2 ", d=3), torch.tensor(CHAIN).bool())
    assert parse_graph("0>1", d=4).shape == (4, 4) and parse_graph("", d=2).sum() == 0
    assert torch.equal(parse_graph("2>0,2>1"), torch.tensor([[0, 0, 0], [0, 0, 0], [1, 1, 0]]).bool())
    for text in ("0-1", "0>1,", "a>b", "0>1>2", "-1>2", "0>"):
        with pytest.raises(FluxMatchError, match="bad edge .* write edges as 'j>i'"):
            parse_graph(text)
    with pytest.raises(FluxMatchError, match=r"edge 0>3 names node 3, out of range for a graph of 3 nodes \(0\.\.2\)"):
        parse_graph("0>1,0>3", d=3)
    with pytest.raises(FluxMatchError, match="needs its number of nodes"):
        parse_graph(" ")
    with pytest.raises(FluxMatchError, match="cycle 0 → 1 → 0"):
        parse_graph("0>1,1>0")
    with pytest.raises(FluxMatchError, match="to itself"):
        parse_graph("1>1")
    with pytest.raises(FluxMatchError, match="graph is text"):
        parse_graph(["0>1"])
