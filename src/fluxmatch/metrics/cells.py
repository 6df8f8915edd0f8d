"""RNA-velocity evaluation on arrays: velocity graph, transition weights, embedding projection,
cross-boundary direction correctness (CBDir), velocity confidence and rate recovery.

Everything takes numpy arrays (no anndata), with these conventions:

* ``x``: (n_cells, n_genes) expression, the moment-smoothed spliced abundances (``Ms``).
* ``v``: (n_cells, n_genes) velocities; a gene whose velocity is non-finite in any cell (e.g. a
  NaN column for genes without a fit) is dropped; :func:`finite_genes` gives the mask used, so a
  caller can report how many genes took part.
* ``neighbours``: (n_cells, k) integer indices of each cell's k nearest neighbours (self
  excluded), a fixed k per cell.
* ``emb``: (n_cells, 2) embedding (UMAP, t-SNE, ...); ``clusters``: (n_cells,) cluster names.

Bad input raises :class:`~fluxmatch.errors.FluxMatchError` with a message naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FluxMatchError, check_positive

_CHUNK_ENTRIES = 1 << 22  # cells × k × genes handled at once by velocity_graph


def _matrix(a, name: str, columns: int | None = None, rows: int | None = None, finite: bool = True) -> np.ndarray:
    """``a`` as a 2-D float64 array, checked for its number of rows/columns and (optionally) finiteness."""
    try:
        out = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{name} must be a numeric array, got {type(a).__name__}") from None
    if out.ndim != 2:
        raise FluxMatchError(f"{name} must be 2-D (n_cells, ...), got shape {out.shape}")
    if rows is not None and out.shape[0] != rows:
        raise FluxMatchError(f"{name} has {out.shape[0]} rows but there are {rows} cells (mismatched shapes)")
    if columns is not None and out.shape[1] != columns:
        raise FluxMatchError(f"{name} must have {columns} columns, got shape {out.shape} (mismatched shapes)")
    if finite and not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(1))
        raise FluxMatchError(f"{name} has NaN or inf in {bad.size} row(s) (first at row {bad[0]}): these positions must be finite")
    return out


def _neighbours(neighbours, n_cells: int) -> np.ndarray:
    """``neighbours`` as an int64 (n_cells, k) array with every index in [0, n_cells)."""
    a = np.asarray(neighbours)
    if a.ndim != 2 or a.shape[0] != n_cells or a.shape[1] < 1:
        raise FluxMatchError(f"neighbours must be an integer array (n_cells={n_cells}, k ≥ 1), got shape {a.shape} (mismatched shapes)")
    if not np.issubdtype(a.dtype, np.integer):
        raise FluxMatchError(f"neighbours must hold integer cell indices, got dtype {a.dtype}")
    bad = (a < 0) | (a >= n_cells)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise FluxMatchError(f"neighbour index out of range: neighbours[{i}, {j}] = {a[i, j]}, valid indices are 0..{n_cells - 1}")
    return a.astype(np.int64)


def finite_genes(v) -> np.ndarray:
    """(n_genes,) bool mask of the genes whose velocity is finite in every cell of ``v`` (n_cells, n_genes).

    Raises FluxMatchError if no gene is finite everywhere.
    """
    v = _matrix(v, "v", finite=False)
    keep = np.isfinite(v).all(0)
    if not keep.any():
        raise FluxMatchError(f"no gene of v (shape {v.shape}) has a finite velocity in every cell")
    return keep


def _unit_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` divided by their norms (zero rows stay zero), and the mask of non-zero rows."""
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    nonzero = norm[..., 0] > 0
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0), nonzero


def velocity_graph(x, v, neighbours) -> np.ndarray:
    """Correlation of each cell's velocity with the displacement to each of its neighbours.

    Args:
        x: (n_cells, n_genes) expression (Ms).
        v: (n_cells, n_genes) velocities; genes non-finite in any cell are dropped.
        neighbours: (n_cells, k) neighbour indices.

    Returns:
        (n_cells, k) array: entry (i, j) is the Pearson correlation over the finite-velocity genes
        between ``x[neighbours[i, j]] - x[i]`` and ``v[i]`` (the cosine of the two after centring each
        over genes); 0 where either vector is constant over genes.
    """
    v = _matrix(v, "v", finite=False)
    x = _matrix(x, "x", columns=v.shape[1], rows=v.shape[0], finite=False)
    nb = _neighbours(neighbours, v.shape[0])
    keep = finite_genes(v)
    x, v = x[:, keep], v[:, keep]
    if not np.isfinite(x).all():
        raise FluxMatchError("x has NaN or inf on genes with a finite velocity: expression must be finite")
    vc, _ = _unit_rows(v - v.mean(1, keepdims=True))
    out = np.empty(nb.shape)
    step = max(1, _CHUNK_ENTRIES // (nb.shape[1] * x.shape[1]))
    for start in range(0, x.shape[0], step):
        rows = slice(start, start + step)
        d = x[nb[rows]] - x[rows, None, :]
        d, _ = _unit_rows(d - d.mean(2, keepdims=True))
        out[rows] = np.einsum("ikg,ig->ik", d, vc[rows])
    return np.clip(out, -1.0, 1.0)


def transition_matrix(graph, scale: float = 10.0) -> np.ndarray:
    """Row-stochastic transition weights over each cell's neighbours.

    ``w_ij = expm1(scale · max(graph_ij, 0))``, normalised over j; a row without a positive entry
    falls back to uniform weights 1/k. This is scVelo's exponential kernel on the positive
    correlations, without its self-transitions and without its negative-cosine terms. Computed
    stably for large ``scale`` (the weights are rescaled by the row maximum before normalising).

    Args:
        graph: (n_cells, k) correlations from :func:`velocity_graph`.
        scale: the kernel's inverse temperature (> 0).

    Returns:
        (n_cells, k) non-negative weights whose rows sum to 1.
    """
    g = _matrix(graph, "graph")
    scale = check_positive(scale, "scale")
    s = scale * np.maximum(g, 0.0)
    m = s.max(1, keepdims=True)
    # expm1(s) · exp(-m) = exp(s - m) · (1 - exp(-s)): both factors stay in [0, 1]
    w = np.exp(s - m) * -np.expm1(-s)
    total = w.sum(1, keepdims=True)
    uniform = np.full_like(w, 1.0 / w.shape[1])
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), uniform)


def _unit_displacements(emb: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """(n_cells, k, 2) unit vectors from each cell to each neighbour (0 for coincident points)."""
    return _unit_rows(emb[nb] - emb[:, None, :])[0]


def velocity_embedding(emb, graph, neighbours, scale: float = 10.0) -> np.ndarray:
    """Project velocities onto a 2-D embedding through the transition weights.

    ``V_i = Σ_j T_ij ê_ij − (1/k) Σ_j ê_ij`` with ``ê_ij`` the unit vector from ``emb[i]`` to its
    j-th neighbour (0 for coincident points) and ``T = transition_matrix(graph, scale)``: the
    expected unit displacement under the transitions minus that under uniform transitions.

    Args:
        emb: (n_cells, 2) embedding.
        graph: (n_cells, k) velocity graph, aligned with ``neighbours``.
        neighbours: (n_cells, k) neighbour indices.
        scale: kernel inverse temperature of :func:`transition_matrix`.

    Returns:
        (n_cells, 2) embedding velocities.
    """
    emb = _matrix(emb, "emb", columns=2)
    nb = _neighbours(neighbours, emb.shape[0])
    g = _matrix(graph, "graph", rows=emb.shape[0])
    if g.shape != nb.shape:
        raise FluxMatchError(f"graph has shape {g.shape} but neighbours has shape {nb.shape} (mismatched shapes)")
    t = transition_matrix(g, scale)
    e = _unit_displacements(emb, nb)
    return np.einsum("ik,ikd->id", t, e) - e.mean(1)


@dataclass(frozen=True)
class CBDirResult:
    """Cross-boundary direction correctness.

    Attributes:
        per_transition: "A>B" → mean score over the boundary cells of A (NaN if there are none).
        overall: mean score over the boundary cells of all transitions together (a cell counted
            once per transition it is a boundary cell of); NaN if there are none.
        n_cells: "A>B" → number of boundary cells (cells of A with at least one neighbour in B).
        empty: the "A>B" keys without boundary cells (their score is NaN).
    """

    per_transition: dict[str, float]
    overall: float
    n_cells: dict[str, int]
    empty: tuple[str, ...] = ()


def _append_transition(out: list[tuple[str, str]], a: str, b: str) -> None:
    """Add the transition a → b to ``out``, refusing a self-loop or a duplicate."""
    if a == b:
        raise FluxMatchError(f"transition {a}>{b} is a self-loop")
    if (a, b) in out:
        raise FluxMatchError(f"transition {a}>{b} is listed twice")
    out.append((a, b))


def _check_transitions(transitions, known: np.ndarray) -> list[tuple[str, str]]:
    """Transitions as (str, str) pairs, refusing unknown clusters, self-loops and duplicates."""
    names = set(known.tolist())
    out: list[tuple[str, str]] = []
    for pair in transitions:
        try:
            a, b = (str(p) for p in pair)
        except (TypeError, ValueError):
            raise FluxMatchError(f"each transition must be a pair (A, B) of cluster names, got {pair!r}") from None
        for name in (a, b):
            if name not in names:
                raise FluxMatchError(f"transition {a}>{b} names unknown cluster {name!r}; known clusters: {sorted(names)}")
        _append_transition(out, a, b)
    if not out:
        raise FluxMatchError("no transitions given")
    return out


def _boundary_scores(emb: np.ndarray, v_unit: np.ndarray, labels: np.ndarray, nb: np.ndarray, a: str, b: str) -> np.ndarray:
    """Per boundary cell i of A: mean cosine between emb[j] − emb[i] (j a B neighbour) and v_emb[i]."""
    in_b = labels[nb] == b
    cells = np.flatnonzero((labels == a) & in_b.any(1))
    e = _unit_rows(emb[nb[cells]] - emb[cells, None, :])[0]
    cos = np.einsum("ikd,id->ik", e, v_unit[cells])
    mask = in_b[cells]
    return (cos * mask).sum(1) / mask.sum(1)


def cross_boundary_direction(emb, v_emb, clusters, neighbours, transitions) -> CBDirResult:
    """Cross-boundary direction correctness (CBDir) of embedding velocities.

    For each transition A→B and each cell i of A with neighbours N_B(i) in B, the cell's score is the
    mean over j ∈ N_B(i) of cos(emb[j] − emb[i], v_emb[i]) (0 where either vector is zero).

    Args:
        emb: (n_cells, 2) embedding.
        v_emb: (n_cells, 2) embedding velocities (e.g. from :func:`velocity_embedding`).
        clusters: (n_cells,) cluster names (compared as strings).
        neighbours: (n_cells, k) neighbour indices.
        transitions: list of (A, B) cluster-name pairs (see :func:`parse_transitions`).

    Returns:
        :class:`CBDirResult`; scores lie in [−1, 1], +1 when every boundary cell moves straight at its
        B neighbours.
    """
    emb = _matrix(emb, "emb", columns=2)
    v = _matrix(v_emb, "v_emb", columns=2, rows=emb.shape[0])
    labels = np.asarray(clusters).astype(str)
    if labels.shape != (emb.shape[0],):
        raise FluxMatchError(f"clusters must be a 1-D array of {emb.shape[0]} names, got shape {labels.shape} (mismatched shapes)")
    nb = _neighbours(neighbours, emb.shape[0])
    pairs = _check_transitions(transitions, np.unique(labels))
    v_unit = _unit_rows(v)[0]
    scores: dict[str, float] = {}
    counts: dict[str, int] = {}
    every: list[np.ndarray] = []
    for a, b in pairs:
        key = f"{a}>{b}"
        s = _boundary_scores(emb, v_unit, labels, nb, a, b)
        counts[key] = int(s.size)
        scores[key] = float(s.mean()) if s.size else float("nan")
        every.append(s)
    joined = np.concatenate(every)
    overall = float(joined.mean()) if joined.size else float("nan")
    empty = tuple(k for k, n in counts.items() if n == 0)
    return CBDirResult(per_transition=scores, overall=overall, n_cells=counts, empty=empty)


def velocity_confidence(v, neighbours) -> np.ndarray:
    """Coherence of each cell's velocity with its neighbours' (scVelo's "cosine" confidence, uncentred).

    Over the finite-velocity genes, ``v̂_i = v_i / |v_i|`` and ``confidence_i = <v̂_i, mean_j v̂_j>``
    over the neighbours j of i. Cells with zero velocity get NaN and are left out of their
    neighbours' means (a cell whose neighbours all have zero velocity gets NaN too).

    Args:
        v: (n_cells, n_genes) velocities.
        neighbours: (n_cells, k) neighbour indices.

    Returns:
        (n_cells,) confidences in [−1, 1] or NaN.
    """
    v = _matrix(v, "v", finite=False)
    nb = _neighbours(neighbours, v.shape[0])
    u, nonzero = _unit_rows(v[:, finite_genes(v)])
    counts = nonzero[nb].sum(1)
    total = np.zeros_like(u)
    for j in range(nb.shape[1]):  # one neighbour column at a time: (n_cells, n_genes) memory
        total += u[nb[:, j]]
    mean = total / np.maximum(counts, 1)[:, None]
    out = np.einsum("ig,ig->i", u, mean)
    out[~nonzero | (counts == 0)] = np.nan
    return out


def velocity_cosine(v, v_true) -> np.ndarray:
    """Per-cell cosine between inferred and true velocities, over the genes finite in ``v``.

    Args:
        v: (n_cells, n_genes) inferred velocities (NaN gene columns dropped).
        v_true: (n_cells, n_genes) true velocities, finite on the kept genes.

    Returns:
        (n_cells,) cosines; NaN where either row is zero on the kept genes.
    """
    v = _matrix(v, "v", finite=False)
    t = _matrix(v_true, "v_true", columns=v.shape[1], rows=v.shape[0], finite=False)
    keep = finite_genes(v)
    if not np.isfinite(t[:, keep]).all():
        raise FluxMatchError("v_true has NaN or inf on genes where v is finite: true velocities must be finite there")
    a, ok_a = _unit_rows(v[:, keep])
    b, ok_b = _unit_rows(t[:, keep])
    out = np.clip(np.einsum("ig,ig->i", a, b), -1.0, 1.0)
    out[~(ok_a & ok_b)] = np.nan
    return out


def rate_recovery(estimated, true) -> float:
    """Spearman rank correlation between estimated and true rates (any same-shape arrays, e.g. (n_genes,)).

    Only entries finite in both are used; FluxMatchError if fewer than 3 remain or either side is
    constant there.
    """
    est = np.asarray(estimated, dtype=np.float64)
    ref = np.asarray(true, dtype=np.float64)
    if est.shape != ref.shape:
        raise FluxMatchError(f"estimated has shape {est.shape} but true has shape {ref.shape} (mismatched shapes)")
    ok = np.isfinite(est) & np.isfinite(ref)
    if ok.sum() < 3:
        raise FluxMatchError(f"rate_recovery needs at least 3 entries finite in both arrays, got {int(ok.sum())}")
    from scipy import stats  # here: scipy.stats takes most of a second to import

    est, ref = est[ok], ref[ok]
    if np.ptp(est) == 0 or np.ptp(ref) == 0:
        raise FluxMatchError("rate_recovery is undefined when the estimated or the true rates are constant")
    return float(stats.spearmanr(est, ref)[0])


def parse_transitions(text: str) -> list[tuple[str, str]]:
    """Parse "A>B,B>C" into [("A", "B"), ("B", "C")].

    Names are stripped of surrounding whitespace and may contain inner spaces or underscores (not
    ',' or '>'). Empty names, a part without exactly one '>', self-loops and duplicates are refused.

    >>> parse_transitions("Ngn3 low EP > Ngn3 high EP, Pre-endocrine>Beta")
    [('Ngn3 low EP', 'Ngn3 high EP'), ('Pre-endocrine', 'Beta')]
    """
    if not isinstance(text, str) or not text.strip():
        raise FluxMatchError(f"transitions must be a non-empty string like 'A>B,B>C', got {text!r}")
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        names = [p.strip() for p in part.split(">")]
        if len(names) != 2:
            raise FluxMatchError(f"transition {part.strip()!r} must have the form 'A>B' (exactly one '>')")
        a, b = names
        if not a or not b:
            raise FluxMatchError(f"transition {part.strip()!r} has an empty cluster name")
        _append_transition(out, a, b)
    return out
