"""Cells as data: AnnData in and out, the checks on it, and preprocessing to moments.

RNA velocity works on two count matrices per cell × gene: unspliced (``layers['unspliced']``)
and spliced (``layers['spliced']``) transcripts. Before a kinetic model sees them they are
filtered, normalised per cell and smoothed over each cell's neighbours in expression space
("moments": ``layers['Mu']``, ``layers['Ms']``, in normalised counts). :func:`preprocess` does
that either with scVelo and scanpy (when installed: exactly the Flux Matching paper's pipeline)
or with this module's own equivalent, and says which in ``uns['fluxmatch']['preprocessing']``:

1. drop cells without counts and genes with fewer than ``min_shared_counts`` counts in cells
   where both its unspliced and spliced counts are non-zero;
2. scale each layer per cell to the median total of that layer; ``X`` = log1p(normalised spliced);
3. keep the ``n_top_genes`` most variable genes (dispersion z-scored within 20 mean bins, as
   Seurat's flavour) when there are more;
4. PCA of ``X`` (``n_pcs`` components), the ``n_neighbors`` nearest neighbours in that space;
5. moments: the mean of each normalised layer over a cell and its neighbours (the symmetrised
   kNN graph, as scVelo averages over the binarised connectivities).

``anndata`` is an optional dependency (``pip install 'fluxmatch[cells]'``); scVelo and scanpy
another (``pip install 'fluxmatch[rna]'``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import FluxMatchError, check_integer

LAYERS = ("unspliced", "spliced")
"""The count layers every cell data set must carry."""

EMBEDDING_KEYS = ("X_umap", "X_tsne", "X_lineage")
"""2-D embeddings looked for, in this order, when none is named."""

NEIGHBORS_KEY = "fluxmatch_neighbors"
"""``obsm`` key of the (n_cells, k) neighbour indices (self excluded) that preprocessing writes."""

BACKENDS = ("auto", "fluxmatch", "scvelo")


def require_anndata():
    """The ``anndata`` module, or one clear error saying how to install it."""
    try:
        import anndata
    except ImportError:
        raise FluxMatchError("cell data needs the anndata package: pip install 'fluxmatch[cells]'") from None
    return anndata


def scvelo_available() -> bool:
    """Whether scVelo and scanpy import (the ``rna`` extra)."""
    try:
        import scanpy  # noqa: F401
        import scvelo  # noqa: F401
    except Exception:  # a broken install is as good as none here
        return False
    return True


def dense(matrix) -> np.ndarray:
    """A layer (dense or scipy sparse) as a float64 numpy array."""
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


def read_cells(path):
    """Read an ``.h5ad`` file (one clear error if it is missing or not one)."""
    anndata = require_anndata()
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FluxMatchError(f"no cell data at {path}: give an existing .h5ad file")
    if path.suffix.lower() != ".h5ad":
        raise FluxMatchError(f"cell data is read from .h5ad files; {path} has another extension")
    try:
        return anndata.read_h5ad(path)
    except Exception as error:
        raise FluxMatchError(f"cannot read {path} as an .h5ad file: {error}") from None


def write_cells(adata, path, overwrite: bool = False) -> Path:
    """Write ``adata`` to an ``.h5ad`` file atomically (a temporary file in the same folder, then
    renamed); an existing file is replaced only with ``overwrite``."""
    path = Path(os.fspath(path))
    if path.suffix.lower() != ".h5ad":
        raise FluxMatchError(f"cell data is written as .h5ad; {path} has another extension")
    if path.is_dir():
        raise FluxMatchError(f"cannot write cell data to {path}: it is a directory")
    if path.exists() and not overwrite:
        raise FluxMatchError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp.h5ad")
    try:
        adata.write_h5ad(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def check_cells(adata, cluster_key: str | None = None, transitions=None) -> None:
    """Refuse cell data a velocity model cannot use, with one message per problem.

    Checks: both count layers exist with the data's shape; they are finite and non-negative;
    not every cell and not every gene is empty; ``cluster_key`` (when given) is an ``obs``
    column; every cluster a transition (pairs of names) names exists in it.
    """
    missing = [name for name in LAYERS if name not in adata.layers]
    if missing:
        found = ", ".join(adata.layers.keys()) or "none"
        raise FluxMatchError(f"the cell data has no layers['{missing[0]}']: RNA velocity needs 'unspliced' and 'spliced' count layers (layers found: {found})")
    totals = {}
    for name in LAYERS:
        layer = dense(adata.layers[name])
        if layer.shape != tuple(adata.shape):
            raise FluxMatchError(f"layers['{name}'] has shape {layer.shape}, the data {tuple(adata.shape)}")
        if not np.isfinite(layer).all():
            raise FluxMatchError(f"layers['{name}'] holds NaN or inf values; counts must be finite")
        if (layer < 0).any():
            raise FluxMatchError(f"layers['{name}'] holds negative counts (smallest {layer.min():g}); give raw, non-negative counts")
        totals[name] = layer
    both = totals["unspliced"] + totals["spliced"]
    if adata.n_obs == 0 or not both.sum(1).any():
        raise FluxMatchError("every cell has zero counts: there is nothing to fit")
    if adata.n_vars == 0 or not both.sum(0).any():
        raise FluxMatchError("every gene has zero counts: there is nothing to fit")
    if cluster_key is not None:
        check_clusters(adata, cluster_key, transitions or ())


def check_clusters(adata, cluster_key: str, transitions=()) -> list[str]:
    """The sorted cluster names of ``obs[cluster_key]``, after checking the key and the transitions' names."""
    if cluster_key not in adata.obs:
        columns = ", ".join(map(str, adata.obs.columns)) or "none"
        raise FluxMatchError(f"no cluster key {cluster_key!r} in the cell data's obs (columns: {columns}); pass --cluster-key")
    names = sorted({str(c) for c in adata.obs[cluster_key]})
    for pair in transitions:
        for name in pair:
            if name not in names:
                raise FluxMatchError(f"the transition {pair[0]}>{pair[1]} names a cluster {name!r} that {cluster_key!r} does not have (clusters: {', '.join(names)})")
    return names


@dataclass(frozen=True)
class PreprocessConfig:
    """How cell counts become moments (module docstring).

    Attributes:
        backend: "auto" (scVelo when installed, else "fluxmatch"), "fluxmatch" or "scvelo".
        min_shared_counts: a gene's smallest count total over the cells where it has both kinds.
        n_top_genes: most variable genes kept (all when there are fewer).
        n_pcs: principal components of the neighbour search.
        n_neighbors: neighbours per cell, the cell itself not counted.
        seed: seed of the PCA's randomised solver.
    """

    backend: str = "auto"
    min_shared_counts: int = 20
    n_top_genes: int = 2000
    n_pcs: int = 30
    n_neighbors: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise FluxMatchError(f"unknown preprocessing backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        check_integer(self.min_shared_counts, "min_shared_counts", minimum=0)
        for name in ("n_top_genes", "n_pcs", "n_neighbors"):
            check_integer(getattr(self, name), name, minimum=2)
        check_integer(self.seed, "seed", minimum=0)

    def resolved_backend(self) -> str:
        """The backend that will run: "auto" becomes "scvelo" when it imports, else "fluxmatch"."""
        if self.backend == "auto":
            return "scvelo" if scvelo_available() else "fluxmatch"
        if self.backend == "scvelo" and not scvelo_available():
            raise FluxMatchError("the scvelo preprocessing backend needs scVelo and scanpy: pip install 'fluxmatch[rna]'")
        return self.backend


def preprocess(adata, config: PreprocessConfig | None = None):
    """Counts → moments: a processed copy of ``adata`` (the input is left as it was).

    The copy holds ``layers['Ms']``, ``layers['Mu']`` (n_cells, n_genes) in normalised counts,
    ``obsm['X_pca']``, ``obsm[NEIGHBORS_KEY]`` (n_cells, k) int neighbour indices, and
    ``uns['fluxmatch']['preprocessing']``: the backend used, the settings and what was dropped.
    """
    config = config or PreprocessConfig()
    check_cells(adata)
    backend = config.resolved_backend()
    n_cells, n_genes = adata.shape
    out = _preprocess_scvelo(adata, config) if backend == "scvelo" else _preprocess_own(adata, config)
    if out.n_obs < config.n_neighbors + 1 or out.n_vars < 2:
        raise FluxMatchError(f"after filtering {out.n_obs} cells × {out.n_vars} genes remain: too few for {config.n_neighbors} neighbours (lower --min-shared-counts or --n-neighbors)")
    record = {**asdict(config), "backend": backend, "cells_in": n_cells, "genes_in": n_genes, "cells_kept": out.n_obs, "genes_kept": out.n_vars}
    out.uns["fluxmatch"] = {**dict(out.uns.get("fluxmatch", {})), "preprocessing": record}
    return out


def _shared_counts(u: np.ndarray, s: np.ndarray) -> np.ndarray:
    both = (u > 0) & (s > 0)
    return ((u + s) * both).sum(0)


def _normalise(layer: np.ndarray) -> np.ndarray:
    """(n, g) counts scaled per cell to the median of the cells' totals."""
    totals = layer.sum(1, keepdims=True)
    target = float(np.median(totals[totals > 0])) if (totals > 0).any() else 1.0
    return layer * (target / np.where(totals > 0, totals, 1.0))


def highly_variable(log_x: np.ndarray, n_top: int, n_bins: int = 20) -> np.ndarray:
    """(g,) bool: the ``n_top`` genes of largest dispersion z-scored within mean bins (Seurat's flavour).

    ``log_x`` (n, g) log1p-normalised counts; means and dispersions are computed on expm1(log_x).
    """
    counts = np.expm1(log_x)
    mean = counts.mean(0)
    var = counts.var(0, ddof=1) if counts.shape[0] > 1 else np.zeros_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(np.where(mean > 0, var / np.where(mean > 0, mean, 1.0), np.nan))
        log_mean = np.log1p(mean)
    edges = np.linspace(log_mean.min(), log_mean.max() + 1e-12, n_bins + 1)
    bins = np.clip(np.digitize(log_mean, edges) - 1, 0, n_bins - 1)
    z = np.full_like(mean, -np.inf)
    for b in np.unique(bins):
        members = (bins == b) & np.isfinite(dispersion)
        if members.sum() == 0:
            continue
        d = dispersion[members]
        spread = d.std(ddof=1) if d.size > 1 else 0.0
        z[members] = (d - d.mean()) / spread if spread > 0 else 1.0
    keep = np.zeros(mean.shape, dtype=bool)
    keep[np.argsort(-z, kind="stable")[:n_top]] = True
    return keep


def knn_indices(points: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each point's k nearest neighbours (Euclidean), the point itself excluded."""
    from sklearn.neighbors import NearestNeighbors

    n = points.shape[0]
    if n < k + 1:
        raise FluxMatchError(f"{n} cells cannot each have {k} neighbours")
    index = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points, return_distance=False)
    rows = np.arange(n)[:, None]
    is_self = index == rows
    # drop the cell itself where the search returned it, else the farthest (a duplicate took its place)
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(index, dtype=bool)
    keep[np.arange(n), drop] = False
    return index[keep].reshape(n, k)


def moments(layer: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(n, g) mean of ``layer`` over each cell and its neighbours in the symmetrised kNN graph."""
    from scipy import sparse

    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    graph = sparse.csr_matrix((np.ones(n * k), (rows, neighbours.ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(np.float64) + sparse.identity(n, format="csr")
    graph = sparse.diags(1.0 / np.asarray(graph.sum(1)).ravel()) @ graph
    return np.asarray(graph @ layer)


def _preprocess_own(adata, config: PreprocessConfig):
    from sklearn.decomposition import PCA

    u, s = dense(adata.layers["unspliced"]), dense(adata.layers["spliced"])
    cells = (u + s).sum(1) > 0
    genes = _shared_counts(u[cells], s[cells]) >= config.min_shared_counts
    if not genes.any():
        raise FluxMatchError(f"no gene has {config.min_shared_counts} shared unspliced/spliced counts; lower --min-shared-counts")
    out = adata[cells][:, genes].copy()
    u, s = u[cells][:, genes], s[cells][:, genes]
    un, sn = _normalise(u), _normalise(s)
    log_x = np.log1p(sn)
    if out.n_vars > config.n_top_genes:
        keep = highly_variable(log_x, config.n_top_genes)
        out, un, sn, log_x = out[:, keep].copy(), un[:, keep], sn[:, keep], log_x[:, keep]
    n_comps = max(1, min(config.n_pcs, out.n_obs - 1, out.n_vars - 1))
    pcs = PCA(n_components=n_comps, random_state=config.seed).fit_transform(log_x - log_x.mean(0))
    neighbours = knn_indices(pcs, min(config.n_neighbors, out.n_obs - 1))
    out.X = log_x.astype(np.float32)
    out.layers["spliced_normalised"], out.layers["unspliced_normalised"] = sn.astype(np.float32), un.astype(np.float32)
    out.layers["Ms"], out.layers["Mu"] = moments(sn, neighbours).astype(np.float32), moments(un, neighbours).astype(np.float32)
    out.obsm["X_pca"], out.obsm[NEIGHBORS_KEY] = pcs.astype(np.float32), neighbours
    return out


def _preprocess_scvelo(adata, config: PreprocessConfig):
    """The Flux Matching paper's pipeline through scanpy and scVelo (the settings of ``config``)."""
    import scanpy as sc
    import scvelo as scv

    verbosity = scv.settings.verbosity
    scv.settings.verbosity = 0
    try:
        return _scvelo_steps(adata, config, sc, scv)
    finally:
        scv.settings.verbosity = verbosity


def _scvelo_steps(adata, config: PreprocessConfig, sc, scv):
    out = adata.copy()
    out.X = dense(out.layers["spliced"]).astype(np.float32)
    sc.pp.filter_cells(out, min_counts=1)
    scv.pp.filter_and_normalize(out, min_shared_counts=config.min_shared_counts, layers_normalize=["X", "spliced", "unspliced"])
    if out.n_vars == 0:
        raise FluxMatchError(f"no gene has {config.min_shared_counts} shared unspliced/spliced counts; lower --min-shared-counts")
    sc.pp.log1p(out)
    if out.n_vars > config.n_top_genes:
        sc.pp.highly_variable_genes(out, n_top_genes=config.n_top_genes, flavor="seurat", subset=True)
    n_comps = max(1, min(config.n_pcs, out.n_obs - 1, out.n_vars - 1))
    sc.pp.pca(out, n_comps=n_comps, random_state=config.seed)
    k = min(config.n_neighbors, out.n_obs - 1)
    sc.pp.neighbors(out, n_pcs=n_comps, n_neighbors=k + 1, random_state=config.seed)
    scv.pp.moments(out, n_neighbors=None, n_pcs=None)
    out.obsm[NEIGHBORS_KEY] = knn_indices(np.asarray(out.obsm["X_pca"]), k)
    for name in ("Ms", "Mu"):
        out.layers[name] = dense(out.layers[name]).astype(np.float32)
    return out


def embedding(adata, key: str | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """(n_cells, 2) the embedding to project velocities on, and where it came from.

    ``key`` names an ``obsm`` entry (with or without the ``X_`` prefix); without it the first of
    :data:`EMBEDDING_KEYS` present is used, else UMAP (scanpy installed) or the first two PCs.
    """
    if key is not None:
        name = key if key in adata.obsm else f"X_{key}"
        if name not in adata.obsm:
            raise FluxMatchError(f"no embedding {key!r} in the cell data's obsm (keys: {', '.join(adata.obsm.keys()) or 'none'})")
        return _two_columns(adata.obsm[name], name), name
    for name in EMBEDDING_KEYS:
        if name in adata.obsm:
            return _two_columns(adata.obsm[name], name), name
    if scvelo_available():
        import scanpy as sc

        if "neighbors" in adata.uns:
            sc.tl.umap(adata, random_state=seed)
            return _two_columns(adata.obsm["X_umap"], "X_umap"), "X_umap (computed by scanpy)"
    return _two_columns(adata.obsm["X_pca"], "X_pca"), "X_pca (first two components)"


def _two_columns(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise FluxMatchError(f"obsm['{name}'] must be (n_cells, ≥ 2), got {values.shape}")
    if not np.isfinite(values[:, :2]).all():
        raise FluxMatchError(f"obsm['{name}'] holds NaN or inf values")
    return values[:, :2]
