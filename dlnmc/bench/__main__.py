import argparse
import importlib

import pandas as pd

SUITES = ("engine", "flow", "nuclear")

parser = argparse.ArgumentParser(prog="python -m dlnmc.bench", description=__doc__)
parser.add_argument("suite", nargs="?", default="all", choices=(*SUITES, "all"))
parser.add_argument("--quick", action="store_true", help="smaller batches, for a smoke run")
args = parser.parse_args()
with pd.option_context("display.width", 160, "display.max_columns", 30, "display.max_rows", 200):
    for name in SUITES if args.suite == "all" else (args.suite,):
        table = importlib.import_module(f"dlnmc.bench.{name}").run(args.quick)
        print(f"\n== {name} ==")
        print(table.to_string(index=False))
