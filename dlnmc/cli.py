"""Command line: dlnmc <verb>, or python -m dlnmc <verb> (dlnmc <verb> --help for its options).

A study is a name from `dlnmc list`, or a path to a .py study module or a .toml study file.
Outputs go to runs/<study>/ under the current folder unless --out names another folder; the
committed reference outputs in data/<study>/ are compared with a run by dlnmc compare.
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

from dlnmc import __version__
from dlnmc.executors import CHUNK_RUNS, WRITE_MODES

__all__ = ["main"]


def _demo(args) -> int:
    """Simulate a batch of the Razin-Cohen 2x2 problem and print a summary table."""
    import pandas as pd

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
    from dlnmc.study import default_out

    return (default_out(study, args.quick) if args.out is None else Path(args.out)).resolve()


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
    import numba

    from dlnmc import executors, pipeline, runner

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
                                seed=plan.seed, threads=threads, executor=executor,
                                chunk_runs=args.chunk_runs, progress=not args.no_progress,
                                write=args.write)
    _where(done.out, done.tables, done.figures, done.report)
    return 0


def _redraw(args) -> int:
    """Redraw a study's figures from its saved tables."""
    from dlnmc import pipeline, study

    loaded = study.load_study(args.study)
    out = _out(loaded, args)
    tables = pipeline.load(out).tables
    _where(out, tables, pipeline.draw(loaded, out, tables))
    return 0


def _rewrite_report(args) -> int:
    """Rewrite a study's report from its saved tables and figures."""
    from dlnmc import pipeline, study

    loaded = study.load_study(args.study)
    out = _out(loaded, args)
    saved = pipeline.load(out)
    _where(out, saved.tables, saved.figures,
           pipeline.write_report(loaded, out, saved.tables, saved.figures))
    return 0


def _compare(args) -> int:
    """Compare a run's tables with a reference run's, value by value within a tolerance."""
    from dlnmc import compare

    diffs = compare.compare(args.run, args.reference, args.rtol, args.atol)
    print(compare.summary(diffs, args.run, args.reference, args.rtol, args.atol))
    return 0 if all(d.agrees for d in diffs) else 1


def _list(args) -> int:
    """List the studies (name and description) and the engines a cell can run."""
    from dlnmc import study

    studies = study.list_studies()
    if not studies:
        raise ValueError("no studies found (looked in "
                         f"{', '.join(map(str, study.STUDY_FOLDERS))}); run a study by the "
                         "path of its .py or .toml file")
    for name, path in studies.items():
        try:
            text = " ".join(study.read_header(path)[1].split())
        except Exception as err:  # one broken study must not hide the others
            text = f"(cannot load: {err})"
        print(f"{name}\n    {text}")
    print("\nengines (a cell's engine, or engine = ... in a TOML study's grid):")
    for engine in study.ENGINES.values():
        print(f"{engine.name}\n    {engine.summary} ({engine.function})")
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


def _verb(verbs, name, func, **kwargs):
    """A subcommand whose one-line help and description are ``func``'s docstring."""
    parser = verbs.add_parser(name, help=func.__doc__, description=func.__doc__, **kwargs)
    parser.set_defaults(func=func)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlnmc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = _verb(verbs, "run", _run)
    run.add_argument("study", help="a study name (see dlnmc list), or a path to a .py or .toml "
                                   "study file")
    run.add_argument("--runs", type=int, help="trajectories per cell (default: the study's)")
    run.add_argument("--seed", type=int,
                     help="study seed (default: the study's SEED, else 0)")
    run.add_argument("--threads", type=int,
                     help="Numba threads per chunk (default: all cores, shared among workers)")
    run.add_argument("--chunk-runs", type=int,
                     help=f"trajectories per chunk (default {CHUNK_RUNS}; "
                          "the tables do not depend on it)")
    run.add_argument("--write", choices=WRITE_MODES, default="client",
                     help="who writes the parts: this process (default) or the workers "
                          "(needs --out on a filesystem shared with them)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run the chunks on this dask.distributed scheduler")
    where.add_argument("--local-cluster", type=int, metavar="N",
                       help="run the chunks on a local Dask cluster of N worker processes")

    steps = [run]
    for name, func in (("figures", _redraw), ("report", _rewrite_report)):
        steps.append(_verb(verbs, name, func))
        steps[-1].add_argument("study", help="the study that was run (name or path)")
    for verb in steps:
        verb.add_argument("--quick", action="store_true",
                          help="the study's reduced grid (about a minute), in runs/<study>-quick/")
        verb.add_argument("--out", help="output folder (default runs/<study>/ under the current "
                                        "folder)")

    compare = _verb(verbs, "compare", _compare)
    compare.add_argument("run", help="output folder of a run (holding final.parquet)")
    compare.add_argument("reference", help="output folder to compare with, e.g. data/<study>")
    compare.add_argument("--rtol", type=float, default=1e-8,
                         help="relative tolerance (default 1e-8): a value agrees when "
                              "|a - b| <= atol + rtol max(|a|, |b|)")
    compare.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")

    _verb(verbs, "list", _list)

    bench = _verb(verbs, "bench", _bench)
    bench.add_argument("suite", nargs="?", default="all", choices=("engine", "flow", "all"),
                       help="which benchmark (default all)")
    bench.add_argument("--quick", action="store_true", help="smaller batches, for a smoke run")

    demo = _verb(verbs, "demo", _demo)
    demo.add_argument("--depth", type=int, default=3, help="depth N of the network (default 3)")
    demo.add_argument("--runs", type=int, default=1000, help="trajectories (default 1000)")
    demo.add_argument("--max-steps", type=int, default=200_000,
                      help="gradient steps per trajectory at most (default 200000)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--out", default=None,
                      help="folder for the parquet tables (default: none written)")
    return parser


def _warning(show, message, category, *where, **kwargs):
    """Show a runner's warning as one line, others with ``show``."""
    from dlnmc.runner import DamagedPartWarning

    if issubclass(category, DamagedPartWarning):
        print(f"dlnmc: warning: {message}", file=sys.stderr)
    else:
        show(message, category, *where, **kwargs)


def main(argv=None) -> int:
    """Run the command line ``dlnmc`` on ``argv`` (default ``sys.argv[1:]``); return the exit
    status (errors exit with 2 and one line, an interrupt with 130)."""
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
