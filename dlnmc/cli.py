"""Command line: ``dlnmc <verb>`` / ``python -m dlnmc <verb>``.

``run`` simulates a study, analyses it, draws its figures and writes its report; ``figures``
and ``report`` redo those steps from the saved tables; ``list`` shows the studies; ``bench``
runs the benchmarks; ``demo`` simulates a batch of the Razin-Cohen problem.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import runpy
import shlex
import sys
import warnings
from pathlib import Path

import numba
import pandas as pd

from dlnmc import executors, pipeline, runner

__all__ = ["main"]


def _demo(args) -> int:
    """Simulate a batch on the Razin-Cohen 2x2 problem and print a summary table."""
    from dlnmc import razin_cohen_2x2, simulate

    res = simulate(razin_cohen_2x2(), depth=args.depth, runs=args.runs, lr=3e-3, init_scale=1e-3,
                   max_steps=args.max_steps, tol=1e-4, seed=args.seed, checkpoints=None,
                   progress=True)
    df = res.final.assign(det_init_positive=res.final["det_init"] > 0, abs_w_0_0=res.final["w_0_0"].abs())
    summary = df.groupby("det_init_positive").agg(
        runs=("run", "size"), converged=("status", lambda s: (s == "converged").mean()),
        median_steps=("steps", "median"), median_loss=("loss", "median"),
        median_abs_w_0_0=("abs_w_0_0", "median"), median_erank=("erank", "median"),
        det_end_positive=("det", lambda d: (d > 0).mean()))
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(f"Razin & Cohen 2x2, depth {args.depth}, balanced init 1e-3, lr 3e-3, {args.runs} runs")
        print(summary)
    if args.out:
        print(f"tables written to {res.to_parquet(args.out)}")
    return 0


# -- study outputs ------------------------------------------------------------------------

def _out(study, args) -> Path:
    return (runner.default_out(study, args.quick) if args.out is None else Path(args.out)).resolve()


def _where(out, tables, figure_paths, report=None):
    """Print where the tables, figures and report (when given) are."""
    print(f"tables:  {out / 'final.parquet'}, {out / 'history.parquet'}"
          + (f", {out / 'tables'}/ ({', '.join(tables)})" if tables else ""))
    print(f"figures: {out / 'figures'}/ ({len(figure_paths)} PNG)")
    if report is not None:
        print(f"report:  {report}")


# -- verbs --------------------------------------------------------------------------------

def _run(args) -> int:
    """Simulate a study (resuming finished chunks), analyse it, draw figures, write a report."""
    if args.local_cluster is not None and args.local_cluster < 1:
        raise ValueError(f"--local-cluster needs at least one worker, got {args.local_cluster}")
    if args.scheduler is None and args.threads and args.threads > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"--threads must be at most {numba.config.NUMBA_NUM_THREADS} here, "
                         f"got {args.threads}")
    study = runner.load_study(args.study)
    # Every check before any work, with the output folder locked, before a cluster starts.
    plan = runner.prepare(study, _out(study, args), args.quick, args.runs, args.seed,
                          args.threads, args.chunk_runs, args.write)
    if args.scheduler:
        cluster, threads = executors.connect(args.scheduler, args.threads), None
    elif args.local_cluster:
        cluster, threads = executors.local_cluster(args.local_cluster, args.threads), None
    else:
        cluster, threads = contextlib.nullcontext(None), args.threads
    with runner.locked(plan.out) as out:
        runner.check_params(plan)
        with cluster as executor:
            done = pipeline.run(study, out=out, quick=args.quick, runs=args.runs,
                                seed=args.seed, threads=threads, executor=executor,
                                chunk_runs=args.chunk_runs, progress=not args.no_progress,
                                write=args.write)
    _where(done.out, done.tables, done.figures, done.report)
    return 0


def _redraw(args) -> int:
    """Redraw a study's figures from its saved tables."""
    study = runner.load_study(args.study)
    out = _out(study, args)
    tables = pipeline.load(out).tables
    _where(out, tables, pipeline.draw(study, out, tables))
    return 0


def _rewrite_report(args) -> int:
    """Rewrite a study's report from its saved tables and figures."""
    study = runner.load_study(args.study)
    out = _out(study, args)
    saved = pipeline.load(out)
    _where(out, saved.tables, saved.figures,
           pipeline.write_report(study, out, saved.tables, saved.figures))
    return 0


def _list(args) -> int:
    """List the studies of the repository's studies/ folder."""
    studies = runner.list_studies()
    if not studies:
        print(f"no studies in {runner.studies_dir()}")
    for name, path in studies.items():
        try:
            text = " ".join(runner.load_study(path).DESCRIPTION.split())
        except Exception as err:  # one broken study must not hide the others
            text = f"(cannot load: {err})"
        print(f"{name}\n    {text}")
    return 0


def _bench(args) -> int:
    """Run the benchmarks (python -m dlnmc.bench)."""
    argv = sys.argv
    sys.argv = ["dlnmc bench", args.suite, *(["--quick"] if args.quick else [])]
    try:
        runpy.run_module("dlnmc.bench", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlnmc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)

    run = verbs.add_parser("run", help=_run.__doc__, description=_run.__doc__)
    run.add_argument("study", help="a study name (see `dlnmc list`) or a path to a .py file")
    run.add_argument("--runs", type=int, help="trajectories per cell (default: the study's)")
    run.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    run.add_argument("--threads", type=int,
                     help="Numba threads per chunk (default: all cores, shared among workers)")
    run.add_argument("--chunk-runs", type=int,
                     help=f"trajectories per chunk (default {runner.CHUNK_RUNS}; "
                          "the tables do not depend on it)")
    run.add_argument("--write", choices=runner.WRITE_MODES, default="client",
                     help="who writes the parts: this process (default) or the workers "
                          "(needs --out on a filesystem shared with them)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run the chunks on this dask.distributed scheduler")
    where.add_argument("--local-cluster", type=int, metavar="N",
                       help="run the chunks on a local Dask cluster of N worker processes")
    run.set_defaults(func=_run)

    for name, func in (("figures", _redraw), ("report", _rewrite_report)):
        verb = verbs.add_parser(name, help=func.__doc__, description=func.__doc__)
        verb.add_argument("study")
        verb.set_defaults(func=func)
    for verb in (run, verbs.choices["figures"], verbs.choices["report"]):
        verb.add_argument("--quick", action="store_true",
                          help="the study's reduced grid (~1 min), in data/<study>-quick/")
        verb.add_argument("--out", help="output folder (default data/<study>/)")

    verbs.add_parser("list", help=_list.__doc__).set_defaults(func=_list)

    bench = verbs.add_parser("bench", help=_bench.__doc__)
    bench.add_argument("suite", nargs="?", default="all", choices=("engine", "flow", "all"))
    bench.add_argument("--quick", action="store_true", help="smaller batches, for a smoke run")
    bench.set_defaults(func=_bench)

    demo = verbs.add_parser("demo", help=_demo.__doc__)
    demo.add_argument("--depth", type=int, default=3)
    demo.add_argument("--runs", type=int, default=1000)
    demo.add_argument("--max-steps", type=int, default=200_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default=None, help="folder for the parquet tables")
    demo.set_defaults(func=_demo)
    return parser


def _warning(show, message, category, *where, **kwargs):
    """Show a runner's warning as one line, others with ``show``."""
    if issubclass(category, runner.DamagedPartWarning):
        print(f"dlnmc: warning: {message}", file=sys.stderr)
    else:
        show(message, category, *where, **kwargs)


def main(argv=None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_warning, warnings.showwarning)
            return args.func(args)
    except ValueError as err:
        parser.exit(2, f"dlnmc: error: {err}\n")
    except KeyboardInterrupt:
        resume = (f"; finished chunks are kept: run `dlnmc {shlex.join(argv)}` again to resume"
                  if args.verb == "run" else "")
        parser.exit(130, f"dlnmc: interrupted{resume}\n")


if __name__ == "__main__":
    sys.exit(main())
