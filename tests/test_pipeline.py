"""The whole pipeline through the real `mdr` command and real papermill kernels, on the smoke recipe."""
import json
import shutil
from pathlib import Path

from conftest import mdr


def only_run_dir(runs: Path) -> Path:
    found = [p for p in runs.glob("*/*/*") if (p / "run.json").is_file()]
    assert len(found) == 1, found
    return found[0]


def test_run_end_to_end_and_bundle_loads_with_plain_peft(isolated, tmp_path):
    done = mdr("run", "smoke/tiny", "--profile", "cpu-x86", "--quiet", env=isolated)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    info = json.loads((run_dir / "run.json").read_text())
    assert {s: v["status"] for s, v in info["stages"].items()} == dict.fromkeys(
        ["prepare", "train", "evaluate", "showcase"], "done")
    assert all(v["seconds"] > 0 for v in info["stages"].values())
    for key in ("versions", "git", "seeds", "inputs", "model"):
        assert info[key], key
    assert len(info["inputs"]["dga_iec60599/train.jsonl"]) == 64
    for nb in ("10_prepare", "20_train", "30_evaluate", "40_showcase"):
        executed = json.loads((run_dir / "stages" / f"{nb}.ipynb").read_text())
        assert executed["metadata"]["papermill"]["parameters"] == {"run_dir": str(run_dir)}
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["main_metric"] == "exact_match"
    for model in ("base", "tuned"):
        assert "exact_match" in results["models"][model]["overall"]
        assert results["models"][model]["per_category"]
    samples = (run_dir / "eval" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * results["config"]["n"]
    metrics = [json.loads(l) for l in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]

    # the bundle of the same run: plain peft loads the adapter and finds the base by itself
    from peft import AutoPeftModelForCausalLM

    from mdr_stack.showcase import check_manifest

    bundle = run_dir / "showcase"
    assert check_manifest(bundle) == []
    card = (bundle / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card and "model-index" in card
    model = AutoPeftModelForCausalLM.from_pretrained(bundle / "adapter")
    assert model.peft_config["default"].r == 4
    (bundle / "results.json").write_text("{}")
    assert check_manifest(bundle) == ["results.json: changed (sha256 differs)"]


def test_failed_stage_keeps_notebook_and_resume_skips_finished(isolated, tmp_path):
    from mdr_stack.pipeline import create_run, execute_run
    from mdr_stack.settings import get_settings

    run_dir = create_run("smoke/tiny", "cpu-x86", get_settings())
    execute_run(run_dir, stages=("prepare", "train"))
    trained = (run_dir / "train" / "metrics.jsonl").stat().st_mtime_ns
    test_split = run_dir / "data" / "test.jsonl"
    good = test_split.read_text()
    lines = good.splitlines()
    lines[2] = lines[2][:40]  # a truncated record: the evaluate stage must fail on line 3
    test_split.write_text("\n".join(lines) + "\n")

    failed = mdr("run", "--resume", run_dir, "--quiet", env=isolated)
    assert failed.returncode == 1
    assert "stage 'evaluate' failed in cell" in failed.stderr and "test.jsonl:3" in failed.stderr
    assert "Traceback" not in failed.stderr
    executed = json.loads((run_dir / "stages" / "30_evaluate.ipynb").read_text())
    assert any(o.get("output_type") == "error" for c in executed["cells"] for o in c.get("outputs", []))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["stages"]["evaluate"]["status"] == "failed"

    test_split.write_text(good)
    resumed = mdr("run", "--resume", run_dir, "--quiet", env=isolated)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("skipped") == 2
    assert (run_dir / "train" / "metrics.jsonl").stat().st_mtime_ns == trained  # nothing redone
    info = json.loads((run_dir / "run.json").read_text())
    assert all(v["status"] == "done" for v in info["stages"].values())


def test_bad_input_is_one_clear_error(isolated, tmp_path):
    from mdr_stack.recipes import list_recipes

    recipe = tmp_path / "typo.yaml"
    text = list_recipes()["smoke/tiny"].read_text().replace("lora_rank:", "lora_rnak:")
    recipe.write_text(text.replace("path: ../power_equipment", f"path: {list_recipes()['smoke/tiny'].parent.parent}/power_equipment"))
    line = next(i + 1 for i, t in enumerate(recipe.read_text().splitlines()) if "lora_rnak" in t)
    done = mdr("validate", recipe, env=isolated)
    assert done.returncode == 2
    assert f"typo.yaml:{line}: method.lora_rnak: unknown key" in done.stderr
    assert "did you mean 'lora_rank'?" in done.stderr and "Traceback" not in done.stderr
    debug = mdr("--debug", "validate", recipe, env=isolated)
    assert "Traceback" in debug.stderr
    missing = mdr("run", tmp_path / "nope.yaml", env=isolated)
    assert missing.returncode == 2 and "nope.yaml: recipe file not found" in missing.stderr
    assert mdr("run", "smoke/tiny", "--profile", "cpu-x68", env=isolated).stderr.count("did you mean 'cpu-x86'") == 1


def test_runs_dir_from_environment(isolated, tmp_path):
    from mdr_stack.settings import get_settings
    assert get_settings().runs_dir == tmp_path / "runs"
    assert get_settings(runs_dir=str(tmp_path / "flag")).runs_dir == tmp_path / "flag"
