"""kill -9 ``calibench eval --out EXISTING`` at random moments; the folder must hold the old run or the new
one, never a mix (issue 11).

    python bench/kill_eval.py [--kills 12] [--seed 0] [--work DIR]

The parent imports calibench and torch once, then forks a child per try that runs ``run_eval`` into the
same ``--out``; the parent kills it with SIGKILL after a random delay drawn over the child's whole run
(measured first). After every kill: the folder verifies against its manifest and its records are byte
for byte the old run's or the new run's. Prints one line per kill and a summary; exit 1 on a mix.
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


def _records_digest(folder: Path) -> str | None:
    from calibench.runfolder import file_digest

    p = folder / "records.parquet"
    return file_digest(p) if p.is_file() else None


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
    from calibench.runfolder import verify_folder

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
        digests[_records_digest(folder)] = name
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
            verify_folder(out, require=True)
            found = digests.get(_records_digest(out), "unknown records")
        except Exception as exc:  # noqa: BLE001
            found = f"MIX ({exc})"
        if found not in ("old", "new"):
            mixes += 1
        outcomes[found] = outcomes.get(found, 0) + 1
        stale = sorted(p.name for p in work.glob(".run.*"))
        mid_write += bool(stale)
        print(f"kill {i + 1:2d} after {delay:5.2f}s: folder holds the {found} run"
              + (f" (stale staging beside it: {len(stale)}, removed by the next write)" if stale else ""))
    print(f"{args.kills} kills over a {horizon:.1f}s horizon: {outcomes}; {mid_write} while the new run was being "
          f"written; mixes: {mixes}")
    return 1 if mixes else 0


if __name__ == "__main__":
    sys.exit(main())
