"""A tiny study for the runner's tests: four small cells of the GD engine (square and
rectangular problems, balanced and Gaussian inits, with and without noise)."""
from pathlib import Path

from dlnmc.study import Cell

NAME = "tiny"
DESCRIPTION = "Four tiny GD cells used by the runner and CLI tests."


def cells(quick):
    """``quick``: 400 steps per trajectory; full: 5000 (slow enough to kill a run mid-way)."""
    steps = dict(max_steps=400 if quick else 5000, checkpoints=4)
    return [
        Cell("diag-d2", "diagonal_2x2",
             params=dict(depth=2, lr=0.05, init_scale=0.1, tol=0.0, **steps),
             runs=6, labels={"setting": "balanced"}),
        Cell("diag-d3-gauss", "diagonal_2x2",
             params=dict(depth=3, lr=0.05, init="gaussian", init_scale=0.3, tol=1e-10, **steps),
             runs=6, labels={"setting": "gaussian", "scale": 0.3}),
        Cell("rc-d3-noisy", "razin_cohen_2x2",
             params=dict(depth=3, lr=0.05, init_scale=0.1, tol=0.0, temperature=1e-6, **steps),
             runs=5, labels={"setting": "noisy"}),
        Cell("lowrank-d2", "random_low_rank",
             problem_args=dict(rows=3, cols=4, rank=1, n_observed=8, seed=1),
             params=dict(depth=2, lr=0.05, init_scale=0.1, tol=0.0, **steps), runs=4),
    ]


def analyse(final, history):
    summary = final.groupby("cell", observed=True).agg(
        runs=("run", "size"), loss_median=("loss", "median")).reset_index()
    return {"summary": summary}


def figures(final, history, tables, directory):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    for cell, part in history.groupby("cell", observed=True):
        ax.loglog(part["step"] + 1, part["loss"], ".", label=cell)
    ax.set(xlabel="step + 1", ylabel="loss")
    ax.legend()
    path = Path(directory) / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
