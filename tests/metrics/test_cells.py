"""RNA-velocity metrics on tiny hand-made graphs: values by hand or by a plain loop, and bad input refused."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics.cells import (
    CBDirResult,
    cross_boundary_direction,
    finite_genes,
    parse_transitions,
    rate_recovery,
    transition_matrix,
    velocity_confidence,
    velocity_cosine,
    velocity_embedding,
    velocity_graph,
)

# a line of four cells: A A | B B, k = 2
LINE_EMB = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
LINE_CLUSTERS = np.array(["A", "A", "B", "B"])
LINE_NB = np.array([[1, 2], [0, 2], [1, 3], [2, 1]])


def _graph_loop(x, v, nb):
    out = np.zeros(nb.shape)
    for i in range(nb.shape[0]):
        for j, n in enumerate(nb[i]):
            d = x[n] - x[i]
            if np.ptp(d) > 0 and np.ptp(v[i]) > 0:
                out[i, j] = np.corrcoef(d, v[i])[0, 1]
    return out


def test_velocity_graph_matches_corrcoef_loop():
    rng = np.random.default_rng(0)
    x, v = rng.normal(size=(30, 7)), rng.normal(size=(30, 7))
    nb = np.stack([rng.choice(np.delete(np.arange(30), i), 5, replace=False) for i in range(30)])
    np.testing.assert_allclose(velocity_graph(x, v, nb), _graph_loop(x, v, nb), atol=1e-12)


def test_velocity_graph_by_hand_and_constant_vectors():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    nb = np.array([[1, 2], [0, 3], [0, 1], [1, 0]])
    g = velocity_graph(x, v, nb)
    # with 2 genes a centred vector is ±(a, −a): correlations are ±1, or 0 for a constant vector
    # (cell 2 has zero velocity; cell 3 → cell 0 is the constant displacement (−1, −1))
    np.testing.assert_allclose(g, [[1.0, -1.0], [-1.0, -1.0], [0.0, 0.0], [1.0, 0.0]], atol=1e-12)


def test_nan_gene_columns_are_dropped():
    rng = np.random.default_rng(1)
    x, v = rng.normal(size=(12, 6)), rng.normal(size=(12, 6))
    v[:, [1, 4]] = np.nan
    v[3, 2] = np.inf
    keep = finite_genes(v)
    assert keep.tolist() == [True, False, False, True, False, True]
    nb = np.stack([np.roll(np.arange(12), -s)[:3] for s in range(1, 13)])
    np.testing.assert_allclose(velocity_graph(x, v, nb), _graph_loop(x[:, keep], v[:, keep], nb), atol=1e-12)
    np.testing.assert_allclose(velocity_cosine(v, 2.0 * np.nan_to_num(v, posinf=0.0)), np.ones(12))


def test_transition_matrix_by_hand():
    t = transition_matrix(np.array([[0.1, 0.2], [0.5, -0.2], [0.0, -0.3], [1.0, 1.0]]), scale=10.0)
    e1, e2 = math.expm1(1.0), math.expm1(2.0)
    np.testing.assert_allclose(t, [[e1 / (e1 + e2), e2 / (e1 + e2)], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]], atol=1e-12)


def test_transition_rows_sum_to_one_without_overflow():
    g = np.random.default_rng(2).uniform(-1, 1, size=(50, 8))
    for scale in (0.1, 10.0, 1e4):
        t = transition_matrix(g, scale)
        assert np.isfinite(t).all() and (t >= 0).all()
        np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (5, 3), elements=st.floats(-1, 1)), st.floats(1e-3, 1e3))
def test_transition_rows_are_stochastic_property(graph, scale):
    t = transition_matrix(graph, scale)
    assert (t >= 0).all()
    np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-9)
    flat = (graph <= 0).all(1)
    np.testing.assert_allclose(t[flat], 1 / 3)


def test_velocity_embedding_by_hand():
    emb = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    nb = np.array([[1, 2], [0, 2], [0, 1]])
    graph = np.array([[0.5, -0.5], [0.0, 0.0], [0.2, 0.2]])
    got = velocity_embedding(emb, graph, nb)
    # cell 0: T = (1, 0); ê = (1, 0), (0, 1) → V = (1, 0) − (0.5, 0.5)
    np.testing.assert_allclose(got[0], [0.5, -0.5], atol=1e-12)
    # cells 1 and 2: uniform transitions → V = 0
    np.testing.assert_allclose(got[1:], 0.0, atol=1e-12)


def test_velocity_embedding_points_at_the_neighbour_the_velocity_points_to():
    rng = np.random.default_rng(3)
    emb = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # ê of cell 0 average to 0
    nb = np.array([[j for j in range(5) if j != i] for i in range(5)])
    x = rng.normal(size=(5, 10))
    v = rng.normal(size=(5, 10))
    v[0] = 3.0 * (x[1] - x[0])
    graph = velocity_graph(x, v, nb)
    assert graph[0, 0] == pytest.approx(1.0) and (graph[0, 1:] < 1).all()
    errors = [np.linalg.norm(velocity_embedding(emb, graph, nb, scale)[0] - [1.0, 0.0]) for scale in (1.0, 10.0, 100.0, 1000.0)]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-6


def test_cbdir_along_and_against_the_boundary():
    along = np.tile([1.0, 0.0], (4, 1))
    res = cross_boundary_direction(LINE_EMB, along, LINE_CLUSTERS, LINE_NB, [("A", "B")])
    assert isinstance(res, CBDirResult)
    assert res.per_transition == {"A>B": 1.0} and res.overall == 1.0 and res.n_cells == {"A>B": 2} and res.empty == ()
    res = cross_boundary_direction(LINE_EMB, -along, LINE_CLUSTERS, LINE_NB, [("A", "B"), ("B", "A")])
    assert res.per_transition == {"A>B": -1.0, "B>A": 1.0}
    assert res.overall == 0.0 and res.n_cells == {"A>B": 2, "B>A": 2}


def test_cbdir_by_hand_and_empty_transitions():
    emb = np.vstack([LINE_EMB, [[10.0, 10.0]]])
    clusters = np.array(["A", "A", "B", "B", "far C"])
    nb = np.vstack([LINE_NB, [[3, 2]]])
    v = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    res = cross_boundary_direction(emb, v, clusters, nb, [("A", "B"), ("far C", "A")])
    # cell 0 → cell 2 along (2, 0): cos = 1/√2; cell 1 → cell 2 along (1, 0): cos = 0
    assert res.per_transition["A>B"] == pytest.approx(0.5 / math.sqrt(2))
    assert math.isnan(res.per_transition["far C>A"]) and res.empty == ("far C>A",) and res.n_cells["far C>A"] == 0
    assert res.overall == pytest.approx(0.5 / math.sqrt(2))


def test_cbdir_counts_a_cell_once_per_transition():
    emb = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    clusters = np.array(["A", "B", "C"])
    nb = np.array([[1, 2], [0, 2], [0, 1]])
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    res = cross_boundary_direction(emb, v, clusters, nb, [("A", "B"), ("A", "C"), ("B", "C")])
    assert res.per_transition["A>B"] == pytest.approx(1.0) and res.per_transition["A>C"] == pytest.approx(0.0)
    assert res.per_transition["B>C"] == pytest.approx(1 / math.sqrt(2))
    assert res.overall == pytest.approx((1.0 + 0.0 + 1 / math.sqrt(2)) / 3)


def test_velocity_confidence():
    nb2 = np.array([[1], [0]])
    np.testing.assert_allclose(velocity_confidence(np.array([[1.0, 2.0], [2.0, 4.0]]), nb2), [1.0, 1.0])
    np.testing.assert_allclose(velocity_confidence(np.array([[1.0, -2.0], [-1.0, 2.0]]), nb2), [-1.0, -1.0])
    nb3 = np.array([[1, 2], [0, 2], [0, 1]])
    conf = velocity_confidence(np.array([[1.0, 0.0, np.nan], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0]]), nb3)
    # gene 3 dropped; cell 0: <(1, 0), ((1, 1)/√2 + (0, 1)) / 2> = 1/(2√2)
    assert conf[0] == pytest.approx(1 / (2 * math.sqrt(2)))
    assert conf[1] == pytest.approx(1 / math.sqrt(2))
    assert conf[2] == pytest.approx((0.0 + 1 / math.sqrt(2)) / 2)
    zero = velocity_confidence(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), nb3)
    assert zero[:2].tolist() == [0.0, 0.0] and math.isnan(zero[2])


def test_velocity_cosine():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(20, 5))
    np.testing.assert_allclose(velocity_cosine(3.5 * truth, truth), 1.0)
    np.testing.assert_allclose(velocity_cosine(-truth, truth), -1.0)
    got = velocity_cosine(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 0.0]]))
    assert got[0] == pytest.approx(1 / math.sqrt(2)) and math.isnan(got[1])


def test_rate_recovery():
    rng = np.random.default_rng(5)
    true = rng.uniform(0.1, 5.0, size=40)
    assert rate_recovery(np.log(true) ** 3 + 7, true) == pytest.approx(1.0)
    assert rate_recovery(-true, true) == pytest.approx(-1.0)
    est = true.copy()
    est[:5] = np.nan
    assert rate_recovery(est, true) == pytest.approx(1.0)


def test_parse_transitions():
    assert parse_transitions("A>B,B>C") == [("A", "B"), ("B", "C")]
    assert parse_transitions("  Ngn3 high EP > Pre_endocrine ,Pre_endocrine>Beta cells ") == [("Ngn3 high EP", "Pre_endocrine"), ("Pre_endocrine", "Beta cells")]


@pytest.mark.parametrize(
    "text, match",
    [("", "non-empty"), ("A>B,", "exactly one"), ("AB", "exactly one"), ("A>B>C", "exactly one"), (" >B", "empty cluster"), ("A>B,A > B", "twice"), ("A>A", "self-loop")],
)
def test_parse_transitions_refuses(text, match):
    with pytest.raises(FluxMatchError, match=match):
        parse_transitions(text)


def test_bad_input_is_refused():
    x = np.zeros((4, 3))
    with pytest.raises(FluxMatchError, match="mismatched"):
        velocity_graph(np.zeros((5, 3)), x, LINE_NB)
    with pytest.raises(FluxMatchError, match="out of range"):
        velocity_graph(x, x, np.array([[1, 2], [0, 2], [1, 4], [2, 1]]))
    with pytest.raises(FluxMatchError, match="integer"):
        velocity_graph(x, x, LINE_NB.astype(float))
    with pytest.raises(FluxMatchError, match="no gene"):
        velocity_graph(x, np.full((4, 3), np.nan), LINE_NB)
    with pytest.raises(FluxMatchError, match="x has NaN"):
        velocity_graph(np.full((4, 3), np.nan), x, LINE_NB)
    with pytest.raises(FluxMatchError, match="scale"):
        transition_matrix(np.zeros((4, 2)), scale=0.0)
    with pytest.raises(FluxMatchError, match="graph has NaN"):
        transition_matrix(np.array([[np.nan, 0.0]]))
    nan_emb = LINE_EMB.copy()
    nan_emb[2, 1] = np.nan
    with pytest.raises(FluxMatchError, match="emb has NaN.*row 2"):
        velocity_embedding(nan_emb, np.zeros((4, 2)), LINE_NB)
    with pytest.raises(FluxMatchError, match="mismatched"):
        velocity_embedding(LINE_EMB, np.zeros((4, 3)), LINE_NB)
    with pytest.raises(FluxMatchError, match="mismatched"):
        velocity_cosine(x, np.zeros((4, 2)))
    with pytest.raises(FluxMatchError, match="mismatched"):
        rate_recovery(np.arange(4.0), np.arange(5.0))
    with pytest.raises(FluxMatchError, match="at least 3"):
        rate_recovery([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])


def test_cbdir_refuses_bad_input():
    v = np.zeros((4, 2))
    with pytest.raises(FluxMatchError, match="unknown cluster 'C'.*known clusters: \\['A', 'B'\\]"):
        cross_boundary_direction(LINE_EMB, v, LINE_CLUSTERS, LINE_NB, [("A", "C")])
    with pytest.raises(FluxMatchError, match="mismatched"):
        cross_boundary_direction(LINE_EMB, v, LINE_CLUSTERS[:3], LINE_NB, [("A", "B")])
    with pytest.raises(FluxMatchError, match="mismatched"):
        cross_boundary_direction(LINE_EMB, v[:3], LINE_CLUSTERS, LINE_NB, [("A", "B")])
    with pytest.raises(FluxMatchError, match="self-loop"):
        cross_boundary_direction(LINE_EMB, v, LINE_CLUSTERS, LINE_NB, [("A", "A")])
    with pytest.raises(FluxMatchError, match="twice"):
        cross_boundary_direction(LINE_EMB, v, LINE_CLUSTERS, LINE_NB, [("A", "B"), ("A", "B")])
    with pytest.raises(FluxMatchError, match="no transitions"):
        cross_boundary_direction(LINE_EMB, v, LINE_CLUSTERS, LINE_NB, [])
