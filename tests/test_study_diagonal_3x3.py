"""The reading of the lecture's claim in studies/diagonal_3x3.py on planted endpoints of the
diag(1, 1, 0) task, whose minimum nuclear norm completions form the segment
S(a) = [[1, a, 0], [a, 1, 0], [0, 0, 0]], |a| <= 1 (of length 2 sqrt(2)), and whose symmetry
W -> D W D, D = diag(1, -1, 1), maps S(a) to S(-a)."""
import numpy as np
import pandas as pd
import pytest

from dlnmc.results import effective_rank
from dlnmc.runner import load_study

study = load_study("diagonal_3x3")
VARIANT, DEPTH = "diag_1_1_0", 3


def segment(a):
    """S(a) for each a: completions of diag(1, 1, 0) (rank 2 for |a| < 1)."""
    a = np.asarray(a, dtype=np.float64)
    W = np.zeros((len(a), 3, 3))
    W[:, 0, 0] = W[:, 1, 1] = 1.0
    W[:, 0, 1] = W[:, 1, 0] = a
    return W


def jitter(W, scale, seed):
    """Perturb the unobserved entries only: the endpoints stay completions."""
    W = W.copy()
    free = ~study.problem(VARIANT).mask
    W[:, free] += np.random.default_rng(seed).normal(0.0, scale, (len(W), int(free.sum())))
    return W


def planted(W, status="converged", loss=1e-12):
    """A final table of the engine's columns for the endpoints W (one cell)."""
    sv = np.linalg.svd(W, compute_uv=False)
    df = pd.DataFrame({"variant": VARIANT, "depth": DEPTH, "run": np.arange(len(W)),
                       "status": status, "loss": loss, "temperature": 0.0})
    for i in range(3):
        for j in range(3):
            df[f"w_{i}_{j}"] = W[:, i, j]
    for k in range(3):
        df[f"sv_{k}"] = sv[:, k]
    return df.assign(erank=effective_rank(sv), det=np.linalg.det(W))


def claim_of(W):
    return study.cell_claim(planted(W), VARIANT, DEPTH)


def tight_cell(seed=0):
    """450 runs within 0.005 per free entry of S(1/2), 50 spread along the segment."""
    rng = np.random.default_rng(seed)
    return np.concatenate([jitter(segment(np.full(450, 0.5)), 0.005, seed),
                           segment(rng.uniform(-1, 1, 50))])


def test_tight_heavy_cluster_holds():
    clusters, reading = claim_of(tight_cell())
    assert reading["claim_holds"] is True
    assert reading["ball_size"] >= 450 and reading["ball_low"] > 0.5
    assert reading["ball_diameter"] <= reading["tolerance"]
    assert reading["ball_rank"] == 2 and reading["rank"] == 2
    assert reading["cluster_mass"] >= 0.9 and reading["free_entry_std"] < 0.02


def test_continuum_is_not_one_minimizer():
    """All 500 runs spread evenly on the segment: no ball of the tolerance's diameter holds
    most of them (the claim fails), whatever a clustering would chain; a brute-force count of
    the densest ball agrees."""
    W = segment(np.linspace(-1, 1, 500))
    kept = planted(W)
    _, reading = study.cell_claim(kept, VARIANT, DEPTH)
    assert reading["claim_holds"] is False and reading["ball_high"] < 0.5
    tolerance = study.claim_tolerance(kept)
    X = W.reshape(500, -1)
    brute = max(int(np.sum(np.linalg.norm(X - x, axis=1) <= tolerance / 2)) for x in X)
    assert reading["ball_size"] == brute and reading["ball_mass"] < 0.2
    assert reading["clusters"] >= 10


@pytest.mark.parametrize("heavy, light, expected", [(300, 200, True), (60, 40, pd.NA),
                                                    (250, 250, pd.NA), (150, 350, False)])
def test_split_between_symmetric_images(heavy, light, expected):
    """Runs split between S(1/2) and its image S(-1/2) (1.41 apart): the ball holds one of
    them; the claim holds when its interval lies above 1/2 (60% of 500), is undecided when it
    covers 1/2 (60% of 100, or an even split), fails below (30% and 70%: the ball picks the
    heavier, 70%: holds; so the failing case plants three images)."""
    if expected is False:  # three points, none holding most: 150 / 175 / 175
        W = jitter(np.concatenate([segment(np.full(150, 0.5)), segment(np.full(175, -0.5)),
                                   segment(np.full(175, 0.0))]), 0.005, 1)
    else:
        W = jitter(np.concatenate([segment(np.full(heavy, 0.5)),
                                   segment(np.full(light, -0.5))]), 0.005, 1)
    clusters, reading = claim_of(W)
    assert reading["claim_holds"] is expected
    if expected is not False:
        assert reading["ball_size"] == heavy and reading["clusters"] == 2
        # the two clusters are symmetric images: one symmetry class holding every run
        assert clusters["symmetry_class"].nunique() == 1
        np.testing.assert_allclose(clusters["class_fraction"], 1.0)


def test_analyse_counts_the_excluded_runs():
    """Runs that did not converge enter no table's statistics and are counted by reason."""
    W = tight_cell()
    stuck = planted(0.01 * segment(np.zeros(2)), status="max_steps", loss=0.9)
    unfinished = planted(0.9 * segment(np.full(3, 0.2)), status="max_steps", loss=0.3)
    final = pd.concat([planted(W), stuck, unfinished], ignore_index=True)
    final["run"] = np.arange(len(final))
    tables = study.analyse(final, None)
    claim = tables["claim"].iloc[0]
    assert (claim["n"], claim["n_excluded"]) == (500, 5)
    assert claim["excluded"] == "stuck_at_origin 2, not_converged 3"
    assert bool(claim["claim_holds"]) and claim["ball_size"] >= 450
    assert tables["clusters"]["size"].sum() == 500
    ends = tables["endpoints"].iloc[0]
    assert (ends["runs"], ends["n"], ends["n_stuck_at_origin"], ends["n_not_converged"]) == (
        505, 500, 2, 3)
    assert (tables["ranks"]["n"] == 500).all()
    assert tables["ranks"]["fraction"].sum() == pytest.approx(1.0)
    sweep = tables["claim_sweep"]
    assert sorted(sweep["scale"]) == sorted(study.CLAIM_SWEEP)
    assert (sweep["n_excluded"] == 5).all()
    verdicts = tables["verdicts"]
    assert (verdicts["n_excluded"] == 5).all()
