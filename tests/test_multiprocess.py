"""Two CPU processes through `accelerate launch` (gloo) train the smoke recipe to the same loss curve as one process,
and the run directory records the plan and the launch it used."""
import json
from pathlib import Path

import pytest
import yaml


def _cpu_profile(folder: Path, devices: int) -> Path:
    "A copy of the shipped cpu-x86 profile with `devices` processes and fp32 only (so both runs compute alike)."
    from mdr_stack.hardware import list_profiles
    data = yaml.safe_load(list_profiles()["cpu-x86"].read_text())
    data.update(name=f"cpu-x86-{devices}proc", devices_per_node=devices,
                dtypes={"bf16": "none", "fp16": "none", "fp32": "native"})
    path = folder / f"cpu-{devices}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _train(profile: Path) -> Path:
    from mdr_stack.pipeline import create_run, open_run, run_stage_inline
    run = open_run(create_run("smoke/tiny", str(profile)))
    run_stage_inline(run, "prepare")
    run_stage_inline(run, "train")
    return run.dir


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(isolated, tmp_path):
    one = _train(_cpu_profile(tmp_path, 1))
    two = _train(_cpu_profile(tmp_path, 2))

    plan = json.loads((two / "plan.json").read_text())
    assert (plan["num_processes"], plan["launcher"], plan["distributed"], plan["backend"]) == (2, "accelerate", "ddp", "gloo")
    launch = json.loads((two / "run.json").read_text())["launch"]
    assert launch["num_processes"] == 2 and launch["env"]["ACCELERATE_USE_CPU"] == "1"
    assert "mdr_stack.launch" in launch["command"] and "--num_processes" in launch["command"]
    assert (two / "launch" / "accelerate_config.yaml").is_file()
    log = (two / "launch" / "train.log").read_text()
    assert "Traceback" not in log

    summary = json.loads((two / "train" / "summary.json").read_text())
    assert summary["num_processes"] == 2
    assert json.loads((two / "train" / "worker_result.json").read_text())["num_processes"] == 2  # WORLD_SIZE seen
    assert json.loads((one / "train" / "summary.json").read_text())["tokens"] == summary["tokens"]
    single, double = _losses(one), _losses(two)
    assert len(single) == len(double) == 4
    assert double == pytest.approx(single, rel=1e-4), (single, double)
    assert (two / "train" / "adapter" / "adapter_model.safetensors").is_file()
