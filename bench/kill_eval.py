"""kill -9 ``calibench eval --out EXISTING`` at random moments; the folder must hold the old run or the new
one, never a mix (issue 11).

    python bench/kill_eval.py [--kills 12] [--seed 0] [--work DIR]

The parent imports calibench and torch once, then forks a child per try that runs ``run_eval`` into the
same ``--out``; the parent kills it with SIGKILL after a random delay drawn over the child's whole run
(measured first). After every kill: the folder verifies against its manifest (where calibench has one)
and its records, metrics and config units are all the old run's or all the new run's. Runs against any
checkout (PYTHONPATH), so the pristine one shows the mixes the manifest-less code leaves. Prints one line per kill and a summary; exit 1 on a mix.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path


def _child(model: Path, out: Path, limit: int) -> None:
    from calibench.evaluate import run_eval
    from calibench.train.config import quiet_transformers

    quiet_transformers()

    run_eval(f"pretrained={model}", ["world-mc", "world-facts"], "choice,first-token", out, limit=limit,
             bootstrap=20, progress=False, figures=True, command="kill_eval")


def _fork_run(model: Path, out: Path, limit: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _child(model, out, limit)
        except BaseException as exc:  # noqa: BLE001 (report and exit; never return into the parent's loop)
            print(f"child failed: {exc}", file=sys.stderr)
            code = 1
        os._exit(code)
    return pid


def _signature(folder: Path) -> tuple[str | None, ...]:
    """What makes a run folder one run: its records' and metrics' bytes and config.json's units (the
    rest of config.json holds the wall-clock seconds)."""
    import hashlib
    import json

    def digest(name: str) -> str | None:
        p = folder / name
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

    units = None
    if (folder / "config.json").is_file():
        try:
            units = json.dumps(json.loads((folder / "config.json").read_text())["units"], sort_keys=True)
        except (ValueError, KeyError):
            units = "unreadable"
    return digest("records.parquet"), digest("metrics.json"), units


def _verify(folder: Path) -> None:
    """The manifest check where this calibench has one (the pristine checkout has none)."""
    try:
        from calibench.runfolder import verify_folder
    except ImportError:
        return
    verify_folder(folder, require=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch  # noqa: F401  (imported once, before forking)

    import calibench.evaluate  # noqa: F401
    from calibench.models.tiny import build_tiny_model

    work = args.work or Path(tempfile.mkdtemp(prefix="kill-eval-"))
    model = build_tiny_model(work / "tiny", ["The capital of France is Paris. " * 20, "Berlin is in Germany. " * 20],
                             vocab_size=300, hidden=16, layers=1, heads=2, context=64)
    rng = random.Random(args.seed)
    old_limit, new_limit = 3, 6
    digests = {}
    durations = []
    for name, limit in (("old", old_limit), ("new", new_limit)):
        folder = work / f"ref-{name}"
        t0 = time.time()
        _, status = os.waitpid(_fork_run(model, folder, limit), 0)
        durations.append(time.time() - t0)
        if status != 0:
            print(f"reference run {name} failed", file=sys.stderr)
            return 1
        digests[_signature(folder)] = name
    out = work / "run"
    horizon = max(durations) * 1.5  # about a third of the kills land after the run finished
    outcomes: dict[str, int] = {}
    mixes = mid_write = 0
    for i in range(args.kills):
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(work / "ref-old", out)  # the previous run, complete
        delay = rng.uniform(0.0, horizon)
        pid = _fork_run(model, out, new_limit)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        try:
            _verify(out)
            found = digests.get(_signature(out), "MIX of files from both runs")
        except Exception as exc:  # noqa: BLE001
            found = f"MIX ({exc})"
        if found not in ("old", "new"):
            mixes += 1
        outcomes[found] = outcomes.get(found, 0) + 1
        stale = sorted(p.name for p in work.glob(".run.*"))
        mid_write += bool(stale)
        print(f"kill {i + 1:2d} after {delay:5.2f}s: folder holds the {found}" + (" run" if found in ("old", "new") else "")
              + (f" (stale staging beside it: {len(stale)}, removed by the next write)" if stale else ""))
    print(f"{args.kills} kills over a {horizon:.1f}s horizon: {outcomes}; {mid_write} while the new run was being "
          f"written; mixes: {mixes}")
    return 1 if mixes else 0


if __name__ == "__main__":
    sys.exit(main())
