"""python -m benchmarks: reference vs fused CPU vs CUDA on the standard cases, one process.

Prints a table (markdown) and writes it, with the machine and commit, to OUT/report.md; with
--scaling also OUT/scaling.png and the scaling table. Files already in OUT are replaced only with
--overwrite. Exits with status 1 when a case failed, a backend's result differed from the
reference's, or CUDA's from the CPU's (the table is still written).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from cpia_cuda.painting.outputs import atomic_write_bytes

from .end_to_end import format_end_to_end, run_end_to_end
from .scaling import format_scaling, plot_scaling, run_scaling
from .suite import available_backends, format_table, run_suite

BACKENDS = ("reference", "cpu", "cuda")


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
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def parse_backends(parser: argparse.ArgumentParser, text: str | None) -> tuple[str, ...]:
    """The backends asked for, each of which must run here; by default all that run here."""
    if text is None:
        return available_backends(BACKENDS)
    backends = tuple(dict.fromkeys(b.strip() for b in text.split(",") if b.strip()))
    unknown = sorted(set(backends) - set(BACKENDS))
    if not backends or unknown:
        parser.error(f"--backends: expected a comma-separated list of reference, cpu, cuda, got {text!r}")
    if "cuda" in backends and "cuda" not in available_backends(("cuda",)):
        parser.error("--backends cuda: no CUDA device, or this build of cpia_cuda has no CUDA kernels")
    if backends == ("reference",):
        parser.error("--backends reference: the reference is timed beside a fused backend; add cpu or cuda")
    return backends


def output_paths(parser: argparse.ArgumentParser, folder: str | None, scaling: bool, overwrite: bool) -> list[Path]:
    """The files this run will write, checked before anything is measured."""
    if folder is None:
        return []
    root = Path(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {folder}: cannot create the folder ({error.strerror or error})")
    if not os.access(root, os.W_OK | os.X_OK):
        parser.error(f"--out {folder}: the folder is not writable")
    paths = [root / "report.md"] + ([root / "scaling.png"] if scaling else [])
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        parser.error(f"--out {folder}: {', '.join(existing)} already exist; pass --overwrite to replace them")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=None,
                        help="comma-separated among reference, cpu, cuda (default: those that run here)")
    parser.add_argument("--quick", action="store_true", help="only the two smallest stroke cases and one flush case")
    parser.add_argument("--scaling", action="store_true", help="also sweep C, H*W, tau, brush, p, and shapes of equal C*H*W")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also paint a photo at 512 and 2048 px with the default network, timed by phase")
    parser.add_argument("--skip-ops", action="store_true", help="skip the standard op cases")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per fused measurement (median)")
    parser.add_argument("--reference-device", default="cpu", choices=("cpu", "cuda"),
                        help="where the pure-PyTorch reference runs (speed-ups are relative to it)")
    parser.add_argument("--out", default=None, help="folder for report.md (and scaling.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace report.md and scaling.png already in --out")
    args = parser.parse_args(argv)
    backends = parse_backends(parser, args.backends)
    if args.reference_device == "cuda" and "cuda" not in available_backends(("cuda",)):
        parser.error("--reference-device cuda: no CUDA device is available")
    paths = output_paths(parser, args.out, args.scaling, args.overwrite)

    header = f"Machine: {machine_description()}\nCommit: {commit()}\n"
    print(header, flush=True)
    report = header + "\n"
    failed = False
    if not args.skip_ops:
        rows = run_suite(backends, quick=args.quick, repeats=args.repeats, reference_device=args.reference_device,
                         log=lambda s: print(s, flush=True))
        report += format_table(rows) + "\n"
        failed = any(row.failed for row in rows)
    if args.scaling:
        points = run_scaling(backends, repeats=args.repeats, log=lambda s: print(s, flush=True))
        report += "\n" + format_scaling(points) + "\n"
        if paths:
            plot_scaling(points, paths[1])
    if args.end_to_end:
        devices = tuple(d for d in ("cpu", "cuda") if d in backends)
        report += "\n" + format_end_to_end(run_end_to_end(devices, log=lambda s: print(s, flush=True))) + "\n"
    print()
    print(report)
    if paths:
        atomic_write_bytes(paths[0], report.encode())
    if failed:
        print("a case failed or a backend's result differed from the reference's (rows 'failed', 'NO', '!= cpu')",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
