"""Run the CPU-sized privacy-utility study and print its table.

Per cell: utility (k-NN and linear-probe accuracy), every attack's AUC, and epsilon for
DP cells; then Spearman's correlation between utility and the strongest attack's AUC (the
LpLA question) and the wall time. Finished cells are cached in the study folder, so a second
run only re-renders the report (delete the folder to time a cold run).

    python benchmarks/study_small.py [--config studies/cpu-small.yaml] [--out DIR]
        [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from leakprobe.io import write_json
from leakprobe.study import load_study_config, plan, run_study
from leakprobe.study.report import print_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "studies" / "cpu-small.yaml"))
    parser.add_argument("--out", default=None, help="study folder (default: the config's)")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (default: "
                        "in-process)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args()
    study = load_study_config(args.config)
    out = args.out or study.out
    cached = sum(r["cached"] for r in plan(study, out))
    start = time.perf_counter()
    summary = run_study(study, out, workers=args.workers, device=args.device)
    seconds = time.perf_counter() - start
    print_table(summary)
    train = sum(c.get("train_seconds") or 0 for c in summary["cells"]
                if c["defence"] != "early-stopping")
    audit = sum(c.get("audit_seconds") or 0 for c in summary["cells"])
    print(f"{summary['n_cells']} cells ({cached} cached before) in {seconds:.0f}s "
          f"(training {train:.0f}s, audit + utility {audit:.0f}s summed over cells)")
    print(f"report: {Path(out) / 'report.html'}")
    if args.json:
        write_json(args.json, {**summary, "wall_seconds": round(seconds, 1),
                               "cached_before": cached})


if __name__ == "__main__":
    main()
