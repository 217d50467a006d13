"""The standard analysis of a study of one problem: what each endpoint is, per-cell summaries,
the verdicts of the norm, rank and volume hypotheses, clusters of minimizers, and the figures
that apply to the problem's family.

TOML studies (:mod:`dlnmc.config`) get it without any code; a study module of one problem may
call it too.  Every table leads with ``cell`` and the grid's axes (the parameters that vary
between cells), in the grid's order.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc import stats
from dlnmc.figures import hyperbola, save, use_theme
from dlnmc.results import entry_columns
from dlnmc.stats.families import family

__all__ = ["analyse", "findings", "figures"]

_MEDIANS = ("erank", "norm_nuclear", "nuclear_excess", "dist_min_nuclear")
"""Descriptors summarized by their median over each cell's finished runs."""


def _keyed(table, axes) -> pd.DataFrame:
    """``table`` (with a ``cell`` column) behind the columns of ``axes``, in grid order."""
    table = table.assign(cell=table["cell"].astype(str))
    return axes.merge(table, on="cell", how="inner", sort=False)


def analyse(final, problem, axes) -> dict[str, pd.DataFrame]:
    """The standard tables of a study of one problem.

    Parameters
    ----------
    final : DataFrame
        The merged ``final`` table (:func:`dlnmc.runner.run_study`).
    problem : CompletionProblem
        The problem of every cell.
    axes : DataFrame
        One row per cell, in grid order: ``cell`` and the grid's varying parameters.

    Returns
    -------
    dict of str -> DataFrame
        ``verdicts`` (:func:`dlnmc.stats.hypotheses` per cell), ``endpoints`` (per cell: runs,
        the counts of :func:`dlnmc.stats.endpoint_status` labels, median loss and steps of
        all runs, medians of erank, nuclear norm, its excess over the minimum and the distance
        to the minimum nuclear norm completions over the finished runs), ``descriptors`` (per
        run: its label, entries, spectrum and those descriptors, :func:`dlnmc.stats.describe`)
        and, for square problems, ``clusters`` (:func:`dlnmc.stats.clusters` of each cell's
        finished runs).
    """
    status = stats.endpoint_status(final, problem)
    described = stats.describe(final, problem)
    described["endpoint_status"] = status
    finished = ~status.isin(stats.EXCLUSIONS)
    summary, verdicts, clusters = [], [], []
    for cell, part in described.groupby("cell", observed=True, sort=False):
        done = part[finished[part.index]]
        summary.append({"cell": cell, "runs": len(part),
                        **stats.status_counts(part["endpoint_status"], problem),
                        "loss_median": part["loss"].median(),
                        "steps_median": part["steps"].median(),
                        **{f"{name}_median": done[name].median() for name in _MEDIANS}})
        verdicts.append(stats.hypotheses(final.loc[part.index], problem, described=part)
                        .assign(cell=cell))
        if problem.is_square and len(done) >= 2:
            clusters.append(stats.clusters(final.loc[done.index], problem).assign(cell=cell))
    columns = ["cell", "run", "endpoint_status", "status", "steps", "loss",
               *entry_columns(problem.shape), *(c for c in described if c.startswith("sv_")),
               *_MEDIANS]
    tables = {"verdicts": pd.concat(verdicts, ignore_index=True),
              "endpoints": pd.DataFrame(summary),
              "descriptors": described[columns].reset_index(drop=True)}
    if clusters:
        tables["clusters"] = pd.concat(clusters, ignore_index=True)
    return {name: _keyed(table, axes) for name, table in tables.items()}


def findings(tables) -> list[str]:
    """One sentence per cell: finished runs, median effective rank and the three verdicts,
    from the tables ``endpoints`` and ``verdicts``."""
    verdicts = tables["verdicts"]
    out = []
    for row in tables["endpoints"].itertuples(index=False):
        row = row._asdict()
        excluded = {label: row[f"n_{label}"] for label in stats.EXCLUSIONS if row[f"n_{label}"]}
        said = verdicts[verdicts["cell"] == row["cell"]]
        words = ", ".join(
            f"{v.hypothesis} " + ("n/a" if pd.isna(v.holds) else "holds" if v.holds else "fails")
            for v in said.itertuples())
        out.append(f"{row['cell']}: {row['runs'] - sum(excluded.values())} of {row['runs']} runs "
                   "finished" + "".join(f", {n} {label}" for label, n in excluded.items())
                   + f"; median effective rank {row['erank_median']:.3g} (`endpoints`); "
                   + words + " (`verdicts`).")
    return out


def _height(cells) -> float:
    return 1.2 + 0.35 * cells


def _status(endpoints, directory):
    """``status``: the fraction of each cell's runs by endpoint label."""
    counts = endpoints.set_index("cell")[[c for c in endpoints if c.startswith("n_")]]
    fractions = counts.div(endpoints.set_index("cell")["runs"], axis=0)
    fractions.columns = [c[2:] for c in fractions.columns]
    ax = fractions.iloc[::-1].plot.barh(stacked=True, width=0.8,
                                        figsize=(7, _height(len(fractions))))
    ax.set(xlabel="fraction of runs (labels of dlnmc.stats.endpoint_status)", ylabel="",
           xlim=(0, 1))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4)
    return save(ax.figure, directory, "status")


def _erank(descriptors, directory):
    """``erank``: the effective rank of the finished runs' endpoints, per cell."""
    done = descriptors[~descriptors["endpoint_status"].isin(stats.EXCLUSIONS)]
    order = list(dict.fromkeys(descriptors["cell"]))
    grid = sns.catplot(data=done, x="erank", y="cell", order=order, kind="strip", color="C0",
                       alpha=0.5, height=_height(len(order)), aspect=7 / _height(len(order)))
    grid.set_axis_labels("effective rank of W(end) (finished runs)", "")
    return save(grid, directory, "erank")


def _loss(history, directory):
    """``loss``: the median loss over each cell's runs at its checkpoints, where at least half
    of the cell's runs are still running (a run's last row is at its own last step)."""
    at = (history.groupby(["cell", "step"], observed=True, sort=False)["loss"]
          .agg(["median", "size"]))
    runs = history.groupby("cell", observed=True)["run"].nunique()
    at = at[at["size"] >= 0.5 * runs.reindex(at.index.get_level_values("cell")).to_numpy()]
    median = at.reset_index().assign(step=lambda d: d["step"] + 1, loss=lambda d: d["median"],
                                     cell=lambda d: d["cell"].astype(str))
    grid = sns.relplot(data=median, x="step", y="loss", hue="cell", kind="line", height=3.4,
                       aspect=1.5)
    grid.set(xscale="log", yscale="log", xlabel="step + 1 (gd: gradient steps; flow: "
                                                "integrator steps)", ylabel="median loss")
    return save(grid, directory, "loss")


def _plane(descriptors, directory):
    """``endpoints_plane`` (the hyperbola task): the endpoints' free entries (a, b) over the
    hyperbola ab = 1, one panel per cell."""
    data = descriptors.assign(a=descriptors["w_0_1"], b=descriptors["w_1_0"])
    limit = 3.0
    grid = sns.relplot(data=data, x="a", y="b", col="cell", col_wrap=min(4, data["cell"].nunique()),
                       s=8, alpha=0.4, edgecolor="none", height=2.6,
                       facet_kws=dict(xlim=(-limit, limit), ylim=(-limit, limit)))
    for ax in grid.axes.flat:
        hyperbola(ax, limit)
    grid.set_titles("{col_name}", size=8)
    grid.set_axis_labels("a = w_0_1", "b = w_1_0")
    return save(grid, directory, "endpoints_plane")


def _growth(descriptors, directory):
    """``w_0_0_vs_loss`` (the Razin-Cohen task): |w_0_0| of the endpoints against their loss,
    with the bound 1 / sqrt(2 loss) of the unbounded runs."""
    data = descriptors.assign(abs_w_0_0=descriptors["w_0_0"].abs())
    grid = sns.relplot(data=data, x="loss", y="abs_w_0_0", hue="cell", s=10, alpha=0.5,
                       edgecolor="none", height=3.4, aspect=1.4)
    loss = data["loss"][data["loss"] > 0]
    if len(loss):
        x = np.geomspace(loss.min(), loss.max(), 50)
        grid.ax.plot(x, 1 / np.sqrt(2 * x), "k:", linewidth=1)
    grid.set(xscale="log", yscale="log", xlabel="loss at the end",
             ylabel="|w_0_0| at the end (dotted: 1 / sqrt(2 loss))")
    return save(grid, directory, "w_0_0_vs_loss")


def _clusters(clusters, directory):
    """``clusters`` (square problems): the fraction of each cell's finished runs in its
    clusters, heaviest first."""
    order = list(dict.fromkeys(clusters["cell"]))
    grid = sns.catplot(data=clusters, x="cluster", y="fraction", col="cell", col_order=order,
                       col_wrap=min(4, len(order)), kind="bar", color="C0", height=2.6,
                       aspect=1.3)
    grid.set_titles("{col_name}", size=8)
    grid.set_axis_labels("cluster, heaviest first", "fraction of finished runs")
    return save(grid, directory, "clusters")


def figures(final, history, tables, directory, problem) -> list:
    """Draw the standard figures from the tables of :func:`analyse`: ``status``, ``erank``,
    ``loss`` (when there are checkpoints), then by the problem's family
    (:func:`dlnmc.stats.families.family`): ``endpoints_plane`` (hyperbola task),
    ``w_0_0_vs_loss`` (Razin-Cohen task), and ``clusters`` (square problems)."""
    use_theme()
    paths = [_status(tables["endpoints"], directory), _erank(tables["descriptors"], directory)]
    if len(history):
        paths.append(_loss(history, directory))
    name = family(problem).name
    if name == "hyperbola":
        paths.append(_plane(tables["descriptors"], directory))
    elif name == "razin_cohen":
        paths.append(_growth(tables["descriptors"], directory))
    if len(tables.get("clusters", ())):
        paths.append(_clusters(tables["clusters"], directory))
    return paths
