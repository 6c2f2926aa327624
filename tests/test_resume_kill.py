"""A run killed with SIGKILL mid-training resumes from its last checkpoint and ends where an uninterrupted run ends."""
import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
from conftest import MDR, mdr

STEPS, SAVE_EVERY, KILL_AT = 30, 3, 5
# the smoke data make 5 steps an epoch: enough epochs that max_steps is what ends training
SETTINGS = ["--set", "training.epochs=8", "--set", f"training.max_steps={STEPS}", "--set", f"training.save_every={SAVE_EVERY}"]


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "train" / "metrics.jsonl"
    if not path.is_file():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written as we read
            break
    return found


def kill_tree(pid: int):
    "Freeze, then SIGKILL, the process and every descendant (the papermill kernel runs in a session of its own)."
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGSTOP)
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree[1:], timeout=10)  # the root is our child: Popen.wait reaps it and keeps its status


def test_sigkill_mid_training_then_resume(isolated, tmp_path):
    runs = tmp_path / "runs"
    started = subprocess.Popen([MDR, "run", "smoke/tiny", "--quiet", *SETTINGS], env=isolated,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, run_dir = time.time() + 300, None
        while time.time() < deadline and started.poll() is None:
            found = [p.parent for p in runs.glob("*/*/*/run.json")]
            run_dir = found[0] if found else None
            if run_dir and (logged := metrics(run_dir)) and logged[-1]["step"] >= KILL_AT:
                break
            time.sleep(0.005)
        assert started.poll() is None, "the run ended before it could be killed"
        kill_tree(started.pid)
    finally:
        if started.poll() is None:
            kill_tree(started.pid)
        started.wait(timeout=30)
    assert started.returncode == -signal.SIGKILL

    killed_at = metrics(run_dir)[-1]["step"]
    assert KILL_AT <= killed_at < STEPS, killed_at  # killed mid-training
    info = json.loads((run_dir / "run.json").read_text())
    assert info["stages"]["prepare"]["status"] == "done" and info["stages"]["train"]["status"] == "running"
    assert not (run_dir / "train" / "summary.json").exists()
    prepared = {p: p.stat().st_mtime_ns for p in (run_dir / "data" / "train_rows.pt", run_dir / "stages" / "10_prepare.ipynb",
                                                   run_dir / "plan.json")}

    resumed = mdr("run", "--resume", run_dir, "--quiet", env=isolated)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("skipped") == 1  # prepare
    assert {p: p.stat().st_mtime_ns for p in prepared} == prepared  # nothing finished was redone
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    assert summary["resumed_from"] % SAVE_EVERY == 0 and SAVE_EVERY <= summary["resumed_from"] <= killed_at, summary
    assert summary["steps"] == STEPS

    whole = mdr("run", "smoke/tiny", "--quiet", *SETTINGS, env=isolated)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    reference = next(p.parent for p in runs.glob("*/*/*/run.json") if p.parent != run_dir)
    expected = json.loads((reference / "train" / "summary.json").read_text())
    assert expected["resumed_from"] is None
    assert abs(summary["final_loss"] - expected["final_loss"]) <= 1e-5, (summary, expected)
    got, want = metrics(run_dir), metrics(reference)
    assert [m["step"] for m in got] == list(range(1, STEPS + 1))  # no step lost or logged twice
    assert abs(got[-1]["loss"] - want[-1]["loss"]) <= 1e-5
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(got, want, strict=True)) <= 1e-5
    for run in (run_dir, reference):
        info = json.loads((run / "run.json").read_text())
        assert all(v["status"] == "done" for v in info["stages"].values())
