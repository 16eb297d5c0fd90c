"""Starting a sweep's runs: `local` processes here, or a SLURM job array through submitit.

Both launchers run the same task: a normal `imgcls train --config OUT/configs/NAME.yaml` (plus
`--resume RUN` for a run with a checkpoint), its output appended to `RUN/train.log`.  Such a task
may itself be multi-GPU (`train.devices` > 1 starts torchrun inside it).

- local: `jobs` processes at a time, the CPU threads divided between them (OMP/MKL_NUM_THREADS);
  SIGINT/SIGTERM reach the running trainings, which save a checkpoint, and no new run starts.
- slurm: one job array (submitit `map_array`), `jobs` tasks at a time (slurm_array_parallelism),
  logs in OUT/slurm/.  `cluster: local|debug` sends the same submission to submitit's local or
  in-process executor, which needs no cluster (and is what the tests use).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImgclsError


@dataclass(frozen=True)
class Task:
    name: str
    run_dir: str
    config_file: str
    resume: bool
    threads: int | None


@dataclass(frozen=True)
class TaskResult:
    name: str
    returncode: int
    message: str = ""  # the run's last line on failure (its one-line error)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def task_argv(t: Task) -> list[str]:
    argv = [sys.executable, "-m", "imgcls_cli", "train", "--config", t.config_file]
    return argv + (["--resume", t.run_dir] if t.resume else [])


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errs = [ln for ln in lines if ln.startswith("error:")]
    return (errs or lines or [""])[-1]


def execute(t: Task, on_start: Callable[[subprocess.Popen], None] | None = None) -> TaskResult:
    """Run one task to its end (this is also what each SLURM array task calls)."""
    env = dict(os.environ)
    if t.threads:
        env.update(OMP_NUM_THREADS=str(t.threads), MKL_NUM_THREADS=str(t.threads))
    log = Path(t.run_dir) / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(task_argv(t))}\n")
        f.flush()
        proc = subprocess.Popen(task_argv(t), stdout=f, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        if on_start is not None:
            on_start(proc)
        rc = proc.wait()
    return TaskResult(t.name, rc, "" if rc == 0 else _last_line(log))


def cpu_threads() -> int:
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalLauncher:
    """`jobs` runs at a time in this machine's processes; a signal stops new starts and reaches the running ones."""

    def __init__(self, jobs: int, report: Callable[[str], None]):
        self.jobs, self.report = jobs, report
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopped: int | None = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopped = signum
        with self.lock:
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)  # the trainer saves a checkpoint and exits

    def _one(self, t: Task) -> TaskResult | None:
        if self.stopped is not None:
            return None

        def started(p: subprocess.Popen) -> None:
            with self.lock:
                self.procs.add(p)
            self.report(f"started  {t.name}" + (" (resuming)" if t.resume else ""))

        res = execute(t, started)
        return res

    def run(self, tasks: list[Task]) -> list[TaskResult]:
        old = {}
        if threading.current_thread() is threading.main_thread():
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        results: list[TaskResult] = []
        try:
            with ThreadPoolExecutor(self.jobs) as pool:
                futures = [pool.submit(self._one, t) for t in tasks]
                for fut in as_completed(futures):
                    res = fut.result()
                    if res is None:
                        continue
                    results.append(res)
                    if self.stopped is not None and not res.ok:
                        self.report(f"stopped  {res.name} (its checkpoint resumes it)")
                    else:
                        self.report(f"finished {res.name}" if res.ok else f"FAILED   {res.name}: {res.message}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return results


def slurm_executor(folder: Path, opts: Any, jobs: int, name: str):
    try:
        import submitit
    except ImportError:
        raise ImgclsError("--launcher slurm needs submitit: pip install 'imgcls[slurm]'") from None
    ex = submitit.AutoExecutor(folder=str(folder), cluster=opts.cluster)
    params: dict[str, Any] = {"name": name, "timeout_min": opts.time, "nodes": 1, "tasks_per_node": 1,
                              "gpus_per_node": opts.gpus_per_task, "slurm_array_parallelism": jobs}
    if opts.cpus_per_task:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(opts, key):
            params[f"slurm_{key}"] = getattr(opts, key)
    if opts.setup:
        params["slurm_setup"] = list(opts.setup)
    ex.update_parameters(**params)
    return ex


def run_slurm(tasks: list[Task], folder: Path, opts: Any, jobs: int, name: str,
              report: Callable[[str], None]) -> list[TaskResult] | None:
    """Submit the tasks as one array; with `wait` (always for cluster local/debug) collect their results."""
    ex = slurm_executor(folder, opts, jobs, name)
    submitted = ex.map_array(execute, tasks)
    ids = [j.job_id for j in submitted]
    report(f"submitted {len(ids)} task(s) to {opts.cluster} (job {ids[0].split('_')[0]}); logs in {folder}")
    if not (opts.wait or opts.cluster != "slurm"):
        return None
    results = []
    for t, job in zip(tasks, submitted, strict=True):
        try:
            res = job.result()
        except Exception as e:  # the task itself failed (node lost, time limit): its own log says why
            res = TaskResult(t.name, 1, (str(e).strip().splitlines() or ["failed"])[-1])
        report(f"finished {res.name}" if res.ok else f"FAILED   {res.name}: {res.message}")
        results.append(res)
    return results
