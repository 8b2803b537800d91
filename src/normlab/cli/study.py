"""``normlab study NAME|all``: run the studies that test the published claims about normalization.

Each study trains its runs through the sweep machinery (parallel worker processes; finished runs are skipped and
interrupted ones resume, so rerunning after a kill continues where it stopped), analyzes them, and writes
``<home>/studies/<name>/result.json`` with tables, figures and verdicts. ``normlab report`` renders them.

Profiles: ``smoke`` (synthetic data, minutes, verdicts always inconclusive — for CI), ``quick`` (2 CPU cores,
CIFAR-10 and Tiny Shakespeare, ≤ 15 minutes a study), ``paper`` (a GPU, full schedules). ``quick`` and ``paper``
read ``--data-dir`` or ``$NORMLAB_DATA``, else download the data; without data or network they stop and say
how to get it.

Examples:
    >>> from normlab.cli import main
    >>> main(["study", "--list"])  # doctest: +ELLIPSIS
    convergence  ...
    0
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add the ``study`` subcommand."""
    from normlab.lab.studies.framework import STUDY_NAMES
    from normlab.lab.studies.profiles import PROFILE_NAMES

    parser = subparsers.add_parser(
        name, help=help_text,
        description="Run one study (or all) that tests a published claim about normalization, on real data, with "
                    "mean ± std over seeds and a verdict computed by a rule written in the study. Results go to "
                    "<home>/studies/<name>/result.json; 'normlab report' renders them.",
        epilog=f"Studies: {', '.join(STUDY_NAMES)}. Examples: 'normlab study all --profile smoke', "
               "'normlab study batch_size --profile quick --data-dir ~/data', "
               "'normlab study all --profile quick && normlab report'.")
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"a study ({', '.join(STUDY_NAMES)}) or 'all'")
    parser.add_argument("--profile", default="smoke", choices=PROFILE_NAMES,
                        help="smoke: synthetic data, minutes, concludes nothing (CI); quick: 2 CPU cores on CIFAR-10 "
                             "and Tiny Shakespeare, <= 15 min a study; paper: a GPU, full schedules (default: smoke)")
    parser.add_argument("--home", help="the lab folder (default: $NORMLAB_HOME or ./normlab-runs)")
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ and tinyshakespeare/input.txt "
                                           "(default: $NORMLAB_DATA; else they are downloaded)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download: stop with instructions when the data is not found locally")
    parser.add_argument("--workers", type=int, default=None,
                        help="training processes in parallel; 0 trains in this process (default: 0 for smoke, whose "
                             "runs are tiny; 2 for quick; 1 for paper)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    parser.add_argument("--list", action="store_true", help="list the studies and the claims they test, then exit")
    parser.set_defaults(func=run)


def _list() -> int:
    from normlab.lab.studies.framework import STUDY_NAMES, get_study

    width = max(map(len, STUDY_NAMES))
    for name in STUDY_NAMES:
        study = get_study(name)
        print(f"{name:<{width}}  {study.title}")
        for claim in study.claims:
            print(f"{'':<{width}}    - {claim}")
    return 0


def _size_numba_pool(workers: int) -> None:
    """Give Numba's thread pool as many threads as each training process uses (unless the user chose).

    The CPU kernels run with torch's thread count, but a larger idle Numba pool still competes for the cores; on a
    busy 2-core machine that made BatchNorm steps up to ten times slower. Worker processes inherit the variable;
    this process too, as long as Numba is not loaded yet (it is on the first normalization call); after that its
    pool keeps its size.
    """
    from normlab.lab.sweep import size_numba_pool, worker_threads

    size_numba_pool(worker_threads(max(1, workers)))


def run(args: argparse.Namespace) -> int:
    """Run the chosen studies; 0 when every study wrote its result, 1 when one failed, 2 for bad input."""
    from normlab.lab.studies.framework import STUDY_NAMES

    if args.list:
        return _list()
    if not args.name:
        print("normlab study: name a study or 'all' (normlab study --list shows them)", file=sys.stderr)
        return 2
    names = list(STUDY_NAMES) if args.name == "all" else [args.name]
    if names[0] not in STUDY_NAMES:
        print(f"normlab study: unknown study {args.name!r}; choose one of {', '.join(STUDY_NAMES)} or 'all'",
              file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print(f"normlab study: --workers must be >= 0, got {args.workers}", file=sys.stderr)
        return 2
    from normlab.lab.data import DATA_ENV, DataNotFoundError
    from normlab.lab.paths import lab_home
    from normlab.lab.studies.data_check import prepare_data
    from normlab.lab.studies.framework import get_study, run_study
    from normlab.lab.studies.profiles import get_profile

    profile = get_profile(args.profile)
    workers = profile.workers if args.workers is None else args.workers
    _size_numba_pool(workers)
    needs = {need for name in names for need in get_study(name).needs}
    try:
        root, summaries = prepare_data(profile, needs, args.data_dir, download=not args.no_download,
                                       progress=not args.quiet)
    except DataNotFoundError as error:
        print(f"normlab study: the data for the '{profile.name}' profile was not found.\n{error}", file=sys.stderr)
        return 2
    if root is not None:
        os.environ[DATA_ENV] = str(root.resolve())  # the sweep's worker processes inherit it
    home = lab_home(args.home)
    failed = []
    start = time.perf_counter()
    for name in names:
        study = get_study(name)
        data = {need: summaries[need] for need in study.needs if need in summaries}
        try:
            result = run_study(name, profile, home=home, workers=workers, progress=not args.quiet,
                               data_dir=root, data=data)
        except KeyboardInterrupt:
            print(f"\nnormlab study: interrupted during '{name}'; run the same command again to resume.",
                  file=sys.stderr)
            return 130
        except Exception:  # noqa: BLE001 — report it, keep going with the other studies
            failed.append(name)
            print(f"normlab study: '{name}' failed:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        print(f"{name}: " + "; ".join(f"{v['status']} — {v['claim']}" for v in result["verdicts"])
              + f"  ({result['timing']['total_s']:.0f} s)")
    total = time.perf_counter() - start
    print(f"{len(names) - len(failed)} of {len(names)} stud{'y' if len(names) == 1 else 'ies'} done in {total:.0f} s; "
          f"results in {home / 'studies'}. Next: normlab report" + (f" --home {args.home}" if args.home else ""))
    if failed:
        print(f"normlab study: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
