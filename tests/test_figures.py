"""Figure helpers (dlnmc.figures) and the markdown report (dlnmc.report)."""
import types

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc.figures import band, hyperbola, legend_above, save, use_theme
from dlnmc.report import MAX_ROWS, markdown_table, write_report
from dlnmc.study import Cell


def test_markdown_table_formats_and_aligns():
    df = pd.DataFrame({"name": ["a|b", "c"], "count": [3, 12], "value": [0.123456789, np.nan],
                       "ok": [True, False]})
    lines = markdown_table(df, digits=3).splitlines()
    assert lines[0] == "| name | count | value | ok |"
    assert lines[1] == "|:---|---:|---:|:---|"
    assert lines[2] == "| a\\|b | 3 | 0.123 | True |"
    assert lines[3] == "| c | 12 |  | False |"
    # Every row has as many cells as the header (escaped pipes do not split cells).
    counts = {len([c for c in line.replace("\\|", "").split("|")]) for line in lines}
    assert counts == {6}


def test_markdown_table_round_trips_numbers():
    values = np.array([1.5e-7, 2.0, 123456.0, -0.25])
    text = markdown_table(pd.DataFrame({"x": values}), digits=6)
    parsed = [float(line.strip("| ")) for line in text.splitlines()[2:]]
    np.testing.assert_allclose(parsed, values, rtol=1e-6)


def _study():
    cells = [Cell("c1", "diagonal_2x2", params={"depth": 2, "lr": 0.05}, runs=10),
             Cell("c2", "diagonal_2x2", params={"depth": 5, "lr": 0.02}, runs=10,
                  labels={"N": "5"})]
    return types.SimpleNamespace(NAME="toy", DESCRIPTION="A toy study.",
                                 cells=lambda quick: cells[:1] if quick else cells)


def test_write_report_holds_tables_links_and_verdicts(tmp_path):
    out = tmp_path / "toy"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = save(fig, out / "figures", "line")
    verdicts = pd.DataFrame({
        "hypothesis": ["norm", "rank", "volume"] * 2, "value": [0.9, 0.1, np.nan, 1, 0, 0.5],
        "n": [10, 10, 0, 8, 8, 8], "holds": pd.array([True, False, None, True, False, True],
                                                      dtype="boolean"),
        "result": ["no"] * 6, "depth": [3, 3, 3, 4, 4, 4]})
    tables = {"summary": pd.DataFrame({"depth": [2, 5], "erank": [1.25, 1.0]}),
              "verdicts": verdicts}
    study = _study()
    study.findings = lambda tables: [f"{len(tables['summary'])} rows (`summary`)."]
    text = write_report(study, out, tables, [png]).read_text()
    assert text.startswith("# toy\n\nA toy study.\n\n## Findings\n\n- 2 rows (`summary`).")
    assert text.index("## Verdicts") < text.index("## Grid") < text.index("## Table: summary")
    # one row per cell (the study's columns), one column per hypothesis
    assert "| depth | norm_verdict | rank_verdict | volume_verdict |" in text
    assert "| 3 | holds (0.9, n 10) | fails (0.1, n 10) | n/a (n 0) |" in text
    assert "| 4 | holds (1, n 8) | fails (0, n 8) | holds (0.5, n 8) |" in text
    assert "| 5 | 1 |" in text and "| 2 | 1.25 |" in text
    assert "![line](figures/line.png)" in text
    assert "| c2 | diagonal_2x2 | gd | 10 | depth=5, lr=0.02 |" in text
    # The grid that was run (quick) instead of the full one.
    quick = write_report(_study(), out, tables, [], cells=_study().cells(True)).read_text()
    assert "| c1 |" in quick and "| c2 |" not in quick and "## Figures" not in quick


def test_write_report_cuts_long_tables(tmp_path):
    long = pd.DataFrame({"run": np.arange(MAX_ROWS + 5)})
    text = write_report(_study(), tmp_path, {"long": long}, []).read_text()
    assert f"| {MAX_ROWS - 1} |" in text and f"| {MAX_ROWS} |" not in text
    assert f"*First {MAX_ROWS} of {MAX_ROWS + 5} rows.*" in text


def test_save_writes_png_and_closes(tmp_path):
    use_theme()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    path = save(fig, tmp_path / "new", "plot")
    assert path.read_bytes().startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


def test_band_and_hyperbola_draw_their_data():
    fig, ax = plt.subplots()
    table = pd.DataFrame({"x": [3.0, 1.0, 2.0], "q10": [0, 1, 2.0], "median": [1, 2, 3.0],
                          "q90": [2, 3, 4.0]})
    band(ax, table, "x", "C0", label="b")
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])  # sorted by x
    np.testing.assert_array_equal(line.get_ydata(), [2, 3, 1])
    hyperbola(ax, 3.0)
    for curve in ax.get_lines()[1:]:
        a, b = curve.get_xdata(), curve.get_ydata()
        np.testing.assert_allclose(a * b, 1.0, rtol=1e-12)
        assert np.abs(a).max() <= 3.0 + 1e-12 and np.abs(b).max() <= 3.0 + 1e-12
    plt.close(fig)


def test_legend_above_merges_panel_labels():
    grid = sns.FacetGrid(pd.DataFrame({"k": [0, 1]}), col="k")
    for k, ax in enumerate(grid.axes.flat):
        ax.plot([0, 1], label="shared")
        ax.plot([1, 0], label=f"only {k}")
    legend_above(grid, ncol=3)
    (legend,) = grid.figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["shared", "only 0", "only 1"]
    plt.close(grid.figure)
