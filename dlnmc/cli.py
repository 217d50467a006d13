"""Command line: ``dlnmc <verb>`` / ``python -m dlnmc <verb>``."""
from __future__ import annotations

import argparse
import sys

import pandas as pd

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dlnmc", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    demo = verbs.add_parser("demo", help=_demo.__doc__)
    demo.add_argument("--depth", type=int, default=3)
    demo.add_argument("--runs", type=int, default=1000)
    demo.add_argument("--max-steps", type=int, default=200_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default=None, help="folder for the parquet tables")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        parser.exit(2, f"dlnmc: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
