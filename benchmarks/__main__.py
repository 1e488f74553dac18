"""python -m benchmarks: reference vs fused CPU vs CUDA on the standard cases, one process.

Prints a table (markdown) and writes it, with the machine and commit, to OUT/report.md; with
--scaling also OUT/scaling.png and the scaling table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

import torch

from .end_to_end import format_end_to_end, run_end_to_end
from .scaling import format_scaling, plot_scaling, run_scaling
from .suite import format_table, run_suite


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads); {gpu}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def commit() -> str:
    """The checkout's commit; CPIA_COMMIT names it where the tree is a copy without its git history."""
    if os.environ.get("CPIA_COMMIT"):
        return os.environ["CPIA_COMMIT"]
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="reference,cpu,cuda",
                        help="comma-separated among reference, cpu, cuda (default: all present)")
    parser.add_argument("--quick", action="store_true", help="only the two smallest stroke cases and one flush case")
    parser.add_argument("--scaling", action="store_true", help="also sweep C, H*W, tau, brush, p, and shapes of equal C*H*W")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also paint a photo at 512 and 2048 px with the default network, timed by phase")
    parser.add_argument("--skip-ops", action="store_true", help="skip the standard op cases")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per fused measurement (median)")
    parser.add_argument("--reference-device", default="cpu", choices=("cpu", "cuda"),
                        help="where the pure-PyTorch reference runs (speed-ups are relative to it)")
    parser.add_argument("--out", default=None, help="folder for report.md (and scaling.png)")
    args = parser.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = set(backends) - {"reference", "cpu", "cuda"}
    if unknown:
        parser.error(f"--backends: expected reference, cpu or cuda, got {', '.join(sorted(unknown))}")

    header = f"Machine: {machine_description()}\nCommit: {commit()}\n"
    print(header, flush=True)
    if args.reference_device == "cuda" and not torch.cuda.is_available():
        parser.error("--reference-device cuda: no CUDA device is available")
    report = header + "\n"
    if not args.skip_ops:
        rows = run_suite(backends, quick=args.quick, repeats=args.repeats, reference_device=args.reference_device,
                         log=lambda s: print(s, flush=True))
        report += format_table(rows) + "\n"
    if args.scaling:
        points = run_scaling(backends, repeats=args.repeats, log=lambda s: print(s, flush=True))
        report += "\n" + format_scaling(points) + "\n"
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            plot_scaling(points, os.path.join(args.out, "scaling.png"))
    if args.end_to_end:
        devices = tuple(d for d in ("cpu", "cuda") if d in backends and (d == "cpu" or torch.cuda.is_available()))
        report += "\n" + format_end_to_end(run_end_to_end(devices, log=lambda s: print(s, flush=True))) + "\n"
    print()
    print(report)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "report.md"), "w") as handle:
            handle.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
