"""A real single-node SLURM (slurmctld + slurmd on localhost): `mdr submit`'s functions run the smoke recipe as a job."""
import json
import os
from pathlib import Path

import pytest
from slurm_cluster import ClusterUnavailable, start_cluster, stop_cluster


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    "A running cluster for the module's tests; SLURM_CONF is exported while it runs."
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as why:
        print(f"SLURM cannot start here: {why}")
        pytest.skip(f"SLURM cannot start here: {why}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    stop_cluster(cluster)
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before


def assert_finished(run_dir, job_id):
    info = json.loads((run_dir / "run.json").read_text())
    log = (run_dir / f"slurm-{job_id}.out").read_text()
    assert {s: v["status"] for s, v in info["stages"].items()} == dict.fromkeys(
        ["prepare", "train", "evaluate", "showcase"], "done"), log[-3000:]
    assert info["slurm"]["job_id"] == job_id
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert "exact_match" in results["models"]["tuned"]["overall"]
    assert (run_dir / "showcase" / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "stages" / "20_train.ipynb").is_file()
    return log


def test_submit_smoke_recipe(slurm, isolated):
    "`mdr submit --wait`: the CLI renders the script, submits it, waits for the job and prints the run's summary."
    from conftest import mdr

    done = mdr("submit", "smoke/tiny", "--profile", "cpu-x86", "--partition", "debug", "--time", "15:00", "--wait",
               env=isolated, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = {p.parent for p in Path(isolated["MDR_RUNS_DIR"]).rglob("run.json")}
    job_id = json.loads((run_dir / "run.json").read_text())["slurm"]["job_id"]
    assert f"submitted job {job_id}" in done.stdout and f"job {job_id}: COMPLETED" in done.stdout, done.stdout
    assert "exact_match on the test split" in done.stdout, done.stdout
    log = assert_finished(run_dir, job_id)
    assert f"mdr-stack job {job_id} on {slurm.node}: 1 node(s), main process {slurm.node}:" in log


def test_impossible_job_is_refused(slurm, isolated):
    from mdr_stack.cluster import render_sbatch, submit
    from mdr_stack.pipeline import create_run
    from mdr_stack.settings import MdrError, get_settings

    run_dir = create_run("smoke/tiny", "cpu-x86", get_settings(), nodes=2)
    with pytest.raises(MdrError, match="sbatch refused the job"):
        submit(run_dir, render_sbatch(run_dir))  # the cluster has one node


def test_sweep_through_slurm_then_compare(slurm, isolated, tmp_path):
    from mdr_stack.cluster import wait_for_job
    from mdr_stack.runs import compare_runs, list_runs, parse_grid, sweep, write_table
    from mdr_stack.settings import get_settings

    grid = parse_grid(["training.learning_rate=1e-3,5e-3"])
    run_dirs = sweep("smoke/tiny", grid, "cpu-x86", get_settings(), backend="slurm",
                     slurm_options={"time_limit": "15:00"})
    assert len(run_dirs) == 2 and len(set(run_dirs)) == 2
    for run_dir in run_dirs:
        job_id = json.loads((run_dir / "run.json").read_text())["slurm"]["job_id"]
        assert wait_for_job(job_id, timeout=900) == "COMPLETED", (run_dir / f"slurm-{job_id}.out").read_text()[-3000:]
        assert_finished(run_dir, job_id)
    assert {r["status"] for r in list_runs(tmp_path / "runs")} == {"done"}
    rows = compare_runs(run_dirs)
    assert [r["overrides"] for r in rows] == ["training.learning_rate=1e-3", "training.learning_rate=5e-3"]
    assert all(r["steps"] == 4 and r["train_s"] > 0 and r["metric"] == "exact_match" for r in rows)
    assert rows[0]["final_loss"] != rows[1]["final_loss"]  # the learning rate reached training
    table = write_table(rows, tmp_path / "sweep.md").read_text()
    assert table.count("\n") == 4 and "training.learning_rate=5e-3" in table

    # the same comparison from the CLI, with the comparison notebook's plots
    from conftest import mdr
    done = mdr("runs", "compare", *run_dirs, "--out", tmp_path / "sweep.csv", "--plot", tmp_path / "plots",
               env=isolated, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 3
    assert (tmp_path / "plots" / "90_compare.ipynb").is_file() and list((tmp_path / "plots").glob("*.png"))
    listed = mdr("runs", "list", "--json", env=isolated)
    assert {r["status"] for r in json.loads(listed.stdout)} == {"done"}, listed.stdout
