"""Following child processes end to end on the CPU: fork, spawn and forkserver pools, a DataLoader worker, subprocess Python children,
a 2-rank gloo job under ``python -m torch.distributed.run``, and a rank that crashes.

Each test runs ``copyhunt trace`` as a real process (children must be real processes) on a small
script whose copies are counted in its comments; expected numbers come from that arithmetic, never
from copyhunt's output. About 40 s in all on 2 cores (torchrun starts 3 Python processes per job).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from copyhunt.follow import KILLED
from copyhunt.tracefile import load

ROOT = Path(__file__).resolve().parent.parent


def copyhunt_trace(cwd: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "120"}
    env.pop("COPYHUNT_FOLLOW", None)
    return subprocess.run([sys.executable, "-m", "copyhunt", "trace", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def line_of(path: Path, marker: str) -> int:
    """The line of ``path`` that carries ``marker`` (a comment), so no line number is hard-coded."""
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if marker in text)


def sites(trace) -> list[tuple[str, int] | None]:
    return [None if c.site is None else (Path(c.site.file).name, c.site.line) for c in trace.copies]


POOLS = '''\
import multiprocessing as mp
import torch


def clone_task(n):
    x = torch.ones(n)
    return float(x.clone().sum())  # CLONE: one clone of n floats per task


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.ones(3).clone()  # LOADER: one clone of 12 B per item, in the DataLoader worker


def t_task(n):
    x = torch.ones(n, 2)
    return float(x.t().contiguous().sum())  # T: one copy of 2n floats per task


if __name__ == "__main__":
    torch.ones(8).clone()  # PARENT: the parent's only copy
    with mp.get_context("fork").Pool(2) as pool:
        print(pool.map(clone_task, [4, 4, 4], chunksize=1))
    with mp.get_context("spawn").Pool(1) as pool:
        print(pool.map(t_task, [3, 3], chunksize=1))
    with mp.get_context("forkserver").Pool(1) as pool:
        print(pool.map(clone_task, [5]))
    print([float(b.sum()) for b in torch.utils.data.DataLoader(Items(), num_workers=1, batch_size=None)])
'''


def test_fork_and_spawn_pool_workers_each_hunt_into_the_run_folder(tmp_path):
    script = tmp_path / "pools.py"
    script.write_text(POOLS)
    done = copyhunt_trace(tmp_path, "pools.py", "-o", "run.json")
    assert done.returncode == 0, done.stderr
    assert "[4.0, 4.0, 4.0]\n[6.0, 6.0]\n[5.0]\n[3.0, 3.0]\n" in done.stdout  # what the program computes untraced
    parent = load(tmp_path / "run.json")
    assert sites(parent) == [("pools.py", line_of(script, "# PARENT"))]
    # 2 fork workers + 1 spawn worker + 1 forkserver worker + 1 DataLoader worker
    assert len(parent.meta.children) == 5
    children = [load(tmp_path / c) for c in parent.meta.children]
    # fork, spawn and DataLoader workers are the parent's children; the forkserver worker is the forkserver's.
    assert sorted(c.meta.parent_pid == parent.meta.pid for c in children) == [False, True, True, True, True]
    clone, t, loader = line_of(script, "# CLONE"), line_of(script, "# T"), line_of(script, "# LOADER")
    # Every worker's copies are its tasks' copies only (a fork worker does not repeat the parent's).
    # The DataLoader worker also moves each item into shared memory to send it: a copy_ inside
    # torch.multiprocessing (no line of the program's own). A fork worker may get no task at all.
    per_child = [set(sites(c)) for c in children]
    assert all(s in (set(), {("pools.py", clone)}, {("pools.py", t)}, {None, ("pools.py", loader)}) for s in per_child)
    assert per_child.count({None, ("pools.py", loader)}) == 1
    all_sites = [s for c in children for s in sites(c)]
    assert all_sites.count(("pools.py", clone)) == 3 + 1  # 3 fork tasks, 1 forkserver task
    assert all_sites.count(("pools.py", t)) == 2  # 2 spawn tasks
    assert all_sites.count(("pools.py", loader)) == 2 and all_sites.count(None) == 2  # 2 items
    assert sum(c.total_bytes for c in children) == 3 * 4 * 4 + 2 * 6 * 4 + 5 * 4 + 2 * (12 + 12)
    assert all(c.meta.error != KILLED for c in children)  # every worker saved its trace
    # `with Pool() as p:` ends with Pool.terminate(): a SIGTERM to workers waiting for a task, their work done.
    assert [(c.meta.complete, c.meta.error) for c in children] == [(True, None)] * 5
    # The merged table (printed by trace) has a column per process and the totals.
    # 32 B (parent) + 3 * 16 B + 2 * 24 B + 20 B + 2 * (12 + 12) B = 196 B
    assert "6 processes, 11 copies, 196 B written" in done.stdout


SUBPROCESSES = '''\
import subprocess
import sys
import torch

torch.ones(2).clone()  # PARENT
if sys.argv[1:] == ["light"]:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    subprocess.run([sys.executable, "-u", "-c", "pass"], check=True)
else:
    subprocess.run([sys.executable, "-u", "-c", CHILD], check=True)
subprocess.run(["true"], check=True)
'''
CHILD = "import torch; x = torch.ones(5); copies = [x.clone() for _ in range(3)]  # 3 clones of 20 B"


def test_subprocess_python_children_are_followed_and_others_noted(tmp_path, monkeypatch, capsys):
    from copyhunt.cli import main

    (tmp_path / "sub.py").write_text(SUBPROCESSES.replace("CHILD", repr(CHILD)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    assert main(["trace", "sub.py", "-o", "run.json"]) == 0  # this process is the parent; its children are real
    assert "2 processes, 4 copies, 68 B written" in capsys.readouterr().out  # 8 B + 3 * 20 B
    parent = load(tmp_path / "run.json")
    assert len(parent.copies) == 1
    (child,) = (load(tmp_path / c) for c in parent.meta.children)
    assert (child.meta.target, child.meta.complete, child.meta.parent_pid) == ("-c <code>", True, os.getpid())
    assert sites(child) == [("<string>", 1)] * 3
    assert parent.meta.notes[-1] == ("1 child process started that copyhunt cannot follow (not a Python script, -m module "
                                     "or -c program it can run): their copies are not in this trace")


def test_no_follow_notes_the_children_in_meta_and_footer(tmp_path, monkeypatch, capsys):
    from copyhunt.cli import main

    (tmp_path / "sub.py").write_text(SUBPROCESSES.replace("CHILD", repr(CHILD)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["trace", "sub.py", "--no-follow", "-o", "run.json", "--", "light"]) == 0
    out = capsys.readouterr().out
    parent = load(tmp_path / "run.json")
    assert parent.meta.children == () and not (tmp_path / "run").exists()
    expected = "2 child processes started and not followed (--no-follow): their copies are not in this trace"
    assert expected in parent.meta.notes
    assert f"note: {expected}" in out
    assert "COPYHUNT_FOLLOW" not in os.environ  # the runner restored the environment


RANKS = '''\
import sys
import time
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
x = torch.ones(4, 4)
for _ in range(rank + 1):
    y = x.clone()  # CLONE: rank r makes r + 1 clones of 64 B
dist.all_reduce(x)  # ALLREDUCE: one collective of 64 B per rank, not a copy
z = x.t().contiguous()  # T: one more copy of 64 B on every rank
if sys.argv[1:] == ["crash"]:
    if rank == 1:
        raise RuntimeError("rank 1 fails")
    while True:  # rank 0 waits until torchrun stops it (SIGTERM) after rank 1 failed
        time.sleep(0.05)
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path: Path, *script_args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "ranks.py").write_text(RANKS)
    return copyhunt_trace(tmp_path, "-o", "run.json", "-m", "torch.distributed.run", "--", "--nproc-per-node", "2",
                          "--master-port", str(_free_port()), "--monitor-interval", "0.1", "ranks.py", *script_args)


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchrun")
    done = _torchrun(folder)
    assert done.returncode == 0, done.stderr
    return folder, done


def test_torchrun_writes_one_trace_per_rank_with_exact_counts(torchrun_job):
    folder, _ = torchrun_job
    script = folder / "ranks.py"
    clone, t = line_of(script, "# CLONE"), line_of(script, "# T")
    parent = load(folder / "run.json")
    assert parent.meta.children == ("run/rank0.json", "run/rank1.json")
    assert parent.copies == ()  # the launcher itself copies nothing
    for r in (0, 1):
        tr = load(folder / "run" / f"rank{r}.json")
        m = tr.meta
        assert (m.rank, m.world_size, m.local_rank, m.parent_pid, m.device, m.complete) == (r, 2, r, parent.meta.pid, "cpu", True)
        assert sites(tr) == [("ranks.py", clone)] * (r + 1) + [("ranks.py", t)]
        assert tr.total_bytes == 64 * (r + 2)
        assert [o.op for o in tr.ops if o.op.startswith("c10d.")] == ["c10d.allreduce_.default"]


def test_torchrun_merged_report_json_and_rank(torchrun_job, monkeypatch, capsys):
    folder, done = torchrun_job
    script = folder / "ranks.py"
    monkeypatch.chdir(folder)
    monkeypatch.setenv("COLUMNS", "120")
    from copyhunt.cli import main

    assert main(["report", "run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(p["label"], p["rank"], p["copies"], p["bytes"]) for p in doc["processes"]] == [
        ("parent", None, 0, 0), ("rank0", 0, 2, 128), ("rank1", 1, 3, 192)]
    rows = {(s["line"], s["op"]): s for s in doc["sites"]}
    clone = rows[(line_of(script, "# CLONE"), "aten.clone.default")]
    assert ({k: v["count"] for k, v in clone["per_process"].items()}, clone["imbalance"]) == ({"parent": 0, "rank0": 1, "rank1": 2}, 2.0)
    (ar,) = doc["collectives"]
    assert (ar["line"], ar["op"], ar["count"], ar["bytes"]) == (line_of(script, "# ALLREDUCE"), "c10d.allreduce_.default", 2, 128)
    # trace printed the merged table once (the launcher's process prints; the ranks print no table).
    assert done.stdout.count("3 processes, 5 copies, 320 B written") == 1
    assert main(["report", "run", "--rank", "1"]) == 0
    assert "3 copies, 192 B written" in capsys.readouterr().out


def test_a_crashing_rank_leaves_readable_partial_traces(tmp_path):
    done = _torchrun(tmp_path, "crash")
    assert done.returncode == 3, done.stderr  # the launcher failed: the target failed
    script = tmp_path / "ranks.py"
    clone, t = line_of(script, "# CLONE"), line_of(script, "# T")
    r0, r1 = (load(tmp_path / "run" / f"rank{r}.json") for r in (0, 1))
    assert (r1.meta.complete, r1.meta.error) == (False, "RuntimeError: rank 1 fails")
    assert sites(r1) == [("ranks.py", clone)] * 2 + [("ranks.py", t)]
    # SIGTERM found rank 0 in its wait loop: the error names where.
    assert not r0.meta.complete and r0.meta.error.startswith("terminated (SIGTERM) in <module> (ranks.py:"), r0.meta.error
    assert sites(r0) == [("ranks.py", clone), ("ranks.py", t)]
    parent = load(tmp_path / "run.json")
    assert not parent.meta.complete and parent.meta.children == ("run/rank0.json", "run/rank1.json")


SIGTERMED = '''\
import multiprocessing as mp
import os
import signal
import sys
import torch


def work():
    torch.ones(4).clone()  # WORK: one clone of 16 B before the SIGTERM
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # mid-work, inside a handler that swallows everything
        torch.ones(2).clone()
    except BaseException:
        pass
    print("survived", flush=True)  # never printed: SIGTERM's default action ends the process


def idle():
    torch.ones(4).clone()  # IDLE: one clone, then a SIGTERM while the process is ending (after run())
    mp.util.Finalize(None, os.kill, (os.getpid(), signal.SIGTERM), exitpriority=0)


if __name__ == "__main__":
    for target in (work, idle):
        p = mp.get_context("fork").Process(target=target)
        p.start()
        p.join()
        print(target.__name__, p.exitcode, flush=True)
'''


def test_a_sigtermed_child_saves_its_trace_and_dies_as_it_would_untraced(tmp_path):
    script = tmp_path / "term.py"
    script.write_text(SIGTERMED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("COPYHUNT_FOLLOW", None)
    plain = subprocess.run([sys.executable, "term.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert plain.stdout == "work -15\nidle -15\n"  # untraced: killed by SIGTERM both times, nothing survives
    done = copyhunt_trace(tmp_path, "term.py", "-o", "run.json")
    assert done.returncode == 0, done.stderr
    assert "work -15\nidle -15\n" in done.stdout and "survived" not in done.stdout  # the same behaviour traced
    parent = load(tmp_path / "run.json")
    work, idle = sorted((load(tmp_path / c) for c in parent.meta.children), key=lambda c: c.meta.pid)
    # Mid-work: the copies made so far, marked incomplete, where the signal found the program.
    assert sites(work) == [("term.py", line_of(script, "# WORK"))]
    assert (work.meta.complete, work.meta.error) == (False, f"terminated (SIGTERM) in work (term.py:{line_of(script, 'os.kill')})")
    # Ending (after run()): no work was cut short, so the trace is complete.
    assert sites(idle) == [("term.py", line_of(script, "# IDLE"))]
    assert (idle.meta.complete, idle.meta.error) == (True, None)
