"""Clusters of endpoints with a size: complete linkage (no chaining), each cluster's diameter,
the spread of its free entries, its medoid, and the symmetry classes of the problem that make
the predicted volumes of two clusters equal."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist, pdist

from dlnmc import geometry
from dlnmc.manifold import check_problem, endpoint_matrices, symmetries
from dlnmc.results import effective_rank, entry_columns
from dlnmc.stats.descriptors import single_depth
from dlnmc.stats.filters import usable_rows

__all__ = ["clusters", "cluster_threshold"]

_MEDOID_SAMPLE = 1000
"""Above this many members, a cluster's medoid is sought on a seeded subsample of this size."""


def cluster_threshold(W) -> float:
    """The default cluster diameter: 0.1 x the median Frobenius norm of the endpoints W."""
    return 0.1 * float(np.median(np.linalg.norm(W.reshape(len(W), -1), axis=1)))


def _complete_linkage(X, threshold, max_points, seed):
    """Labels 0.. of complete-linkage clusters cut at ``threshold``: every cluster's largest
    pairwise distance is at most ``threshold``, so a connected stretch of endpoints is cut into
    pieces of that size instead of being chained into one (single linkage). Above
    ``max_points`` points, a seeded subsample of that size is clustered and every point joins
    the cluster of its nearest subsample point (the diameters are then measured, not bounded)."""
    if len(X) == 1:
        return np.zeros(1, dtype=np.int64)
    if len(X) > max_points:
        pick = np.random.default_rng(int(seed)).choice(len(X), max_points, replace=False)
        base = _complete_linkage(X[pick], threshold, max_points, seed)
        return base[cKDTree(X[pick]).query(X)[1]]
    labels = fcluster(linkage(X, method="complete"), t=threshold, criterion="distance")
    return labels.astype(np.int64) - 1


def _medoid(X, seed):
    """Index of the row of X minimizing the sum of Euclidean distances to the other rows (on a
    seeded subsample of _MEDOID_SAMPLE rows when X has more)."""
    pick = np.arange(len(X))
    if len(X) > _MEDOID_SAMPLE:
        rng = np.random.default_rng(int(seed))
        pick = np.sort(rng.choice(len(X), _MEDOID_SAMPLE, replace=False))
    return pick[np.argmin(cdist(X[pick], X[pick]).sum(axis=1))]


def _diameter(X) -> float:
    """Largest Euclidean distance between two rows of X (0 for one row)."""
    return float(pdist(X).max()) if len(X) > 1 else 0.0


def _symmetry_classes(centres, maps, X, member_of, threshold) -> np.ndarray:
    """Class id per centre (centres heaviest first): each class is one orbit. The heaviest
    cluster not yet in a class starts one, and takes in every cluster not yet in a class where
    the image of its medoid under a symmetry g of the problem lands (the cluster of the
    endpoint nearest to g(centre), when that endpoint lies within ``threshold``). No closure
    is taken over the landings: on a continuum of endpoints the images of neighbouring pieces
    overlap, and closing over them would chain the whole continuum into one class."""
    images = maps(centres)[~maps.is_identity].reshape(-1, len(centres), X.shape[1])
    dist, nearest = cKDTree(X).query(images)
    landing = np.where(dist <= threshold, member_of[nearest], -1)  # (n_maps, k)
    cls = np.full(len(centres), -1, dtype=np.int64)
    for i in range(len(centres)):
        if cls[i] < 0:
            cls[i] = cls.max() + 1
            for j in np.unique(landing[:, i]):
                if j >= 0 and cls[j] < 0:
                    cls[j] = cls[i]
    return cls


def clusters(final, problem, depth=None, threshold=None, rank_tol=1e-3, floor=1e-6,
             min_size=5, max_points=3000, seed=0) -> pd.DataFrame:
    """Cluster the endpoints (complete linkage) and describe each cluster by its size, its
    medoid and the predicted volume of g^N there (several kinds of minimizer).

    The volume hypothesis (Cohen, Menon & Veraszto 2023) predicts that endpoints pile up where
    the Riemannian volume of g^N is largest. Predicted volumes of two clusters are equal only
    when a symmetry of the problem (:func:`dlnmc.manifold.symmetries`: signed permutations of
    rows and columns, and the transpose, that preserve the observations; they preserve singular
    values and hence g^N) maps one cluster's medoid onto the other's: such clusters form one
    symmetry class (the heaviest cluster and the clusters where its medoid's images land),
    and the classes are compared by their predicted volume.

    Parameters
    ----------
    final : DataFrame
        The endpoints to cluster (one depth; callers pass the rows that passed their filter,
        :func:`dlnmc.stats.endpoint_status`). Diverged or non-finite rows are excluded and
        counted.
    problem : CompletionProblem
        Square (the volume columns need g^N).
    depth : int or numpy.inf, optional
        Depth of the predicted volumes; default: the table's single depth.
    threshold : float, optional
        Largest Frobenius distance between two members of a cluster (complete linkage), also
        the tolerance of the symmetry match. Default :func:`cluster_threshold`.
    rank_tol : float
        Numerical rank of a matrix: number of singular values > rank_tol * s_1.
    floor : float
        For ``log_volume_density_reg`` the singular values beyond the rank are set to
        floor * s_1: the prediction compared across clusters at a common distance from the
        lower-rank set (the analogue of the band of :mod:`dlnmc.predictions`).
    min_size : int
        Symmetry classes with fewer members can not define the largest predicted volume,
        unless no class is this large.
    max_points : int
        Above this many endpoints, cluster a seeded subsample and assign the rest to the nearest
        subsample point.
    seed : int
        Seeds the subsamples (clustering above ``max_points`` endpoints, medoid above 1000
        members).

    Returns
    -------
    DataFrame
        One row per cluster, heaviest first: ``cluster``, ``size``, ``fraction``,
        ``diameter`` (largest Frobenius distance between two members), ``free_entry_std``
        (largest standard deviation over the members of an unobserved entry), the medoid's
        entries ``w_<i>_<j>``, ``rank`` and ``erank`` of the medoid, ``member_rank_median``,
        ``log_volume_density`` (at the medoid; it grows without bound as the medoid approaches
        lower rank), ``log_volume_density_reg`` (at the regularized medoid), ``log_orbit_volume``
        (at the medoid; NaN at N = inf), ``symmetry_class`` (clusters related by a symmetry of
        the problem), ``class_fraction``, ``is_heaviest`` (the heaviest class) and
        ``is_max_volume`` (the class of largest ``log_volume_density_reg`` among classes of at
        least ``min_size`` members). ``attrs["dlnmc_stats"]``: threshold, ``n_excluded``,
        depth, number of symmetries.
    """
    check_problem(problem)
    if not problem.is_square:
        raise ValueError("clusters needs a square problem (volumes of g^N)")
    ok = usable_rows(final, problem.shape)
    if not ok.any():
        raise ValueError("no usable (non-diverged, finite) rows")
    W = endpoint_matrices(final, problem.shape)[ok]
    depth = single_depth(final[ok], depth)
    X = W.reshape(len(W), -1)
    if threshold is None:
        threshold = cluster_threshold(W)
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")
    labels = _complete_linkage(X, threshold, int(max_points), seed)
    ids, sizes = np.unique(labels, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    ids, sizes = ids[order], sizes[order]
    members = [np.flatnonzero(labels == c) for c in ids]
    centres = np.stack([W[m[_medoid(X[m], seed)]] for m in members])
    free = ~problem.mask.ravel()
    s_all = np.linalg.svd(W, compute_uv=False)
    member_rank = np.sum(s_all > rank_tol * s_all[:, :1], axis=1)
    U, s, Vt = np.linalg.svd(centres)
    rank = np.sum(s > rank_tol * s[:, :1], axis=1)
    s_reg = np.where(np.arange(s.shape[1]) < rank[:, None], s, floor * s[:, :1])
    log_reg = geometry.log_volume_density((U * s_reg[:, None, :]) @ Vt, depth)

    maps = symmetries(problem)
    member_of = np.empty(len(X), dtype=np.int64)
    for position, m in enumerate(members):
        member_of[m] = position
    cls = _symmetry_classes(centres, maps, X, member_of, threshold)
    class_size = np.bincount(cls, weights=sizes)
    class_volume = np.array([log_reg[cls == c].max() for c in range(len(class_size))])
    eligible = class_size >= min(int(min_size), class_size.max())
    top = int(np.argmax(np.where(eligible, class_volume, -np.inf)))
    heaviest = int(np.argmax(class_size))

    cols = {"cluster": np.arange(len(ids), dtype=np.int64), "size": sizes.astype(np.int64),
            "fraction": sizes / sizes.sum(),
            "diameter": np.array([_diameter(X[m]) for m in members]),
            "free_entry_std": np.array([X[m][:, free].std(axis=0).max() if free.any() else 0.0
                                        for m in members])}
    cols.update(zip(entry_columns(problem.shape), centres.reshape(len(ids), -1).T))
    cols["rank"] = rank.astype(np.int64)
    cols["erank"] = effective_rank(s)
    cols["member_rank_median"] = np.array([np.median(member_rank[m]) for m in members])
    cols["log_volume_density"] = geometry.log_volume_density(centres, depth)
    cols["log_volume_density_reg"] = log_reg
    cols["log_orbit_volume"] = (geometry.log_orbit_volume(centres, depth) if depth != np.inf
                                else np.full(len(ids), np.nan))
    cols["symmetry_class"] = cls
    cols["class_fraction"] = class_size[cls] / sizes.sum()
    cols["is_heaviest"] = cls == heaviest
    cols["is_max_volume"] = cls == top
    out = pd.DataFrame(cols)
    out.attrs = {"dlnmc_stats": {"threshold": float(threshold), "n_excluded": int((~ok).sum()),
                                 "depth": float(depth), "symmetries": int(maps.count),
                                 "min_size": int(min_size)}}
    return out
