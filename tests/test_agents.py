"""The agent recipe on the real SmolLM2-135M-Instruct, through the pipeline's own step functions (which dispatch on
`kind: agent`): prepare (traces in the SmolLM2 tool format, packed), train (loss on the calls and answers only), then
base vs tuned agents on the test split, and the showcase bundle. The tuned agent must beat the base model by at least
30 points of task success, every saved trace must replay exactly, and the bundle must verify."""
import json
import time

from mdr_stack.agents import replay_samples
from mdr_stack.pipeline import create_run, open_run, read_json, run_stage_inline
from mdr_stack.settings import get_settings
from mdr_stack.showcase import verify_bundle


def test_tuned_agent_beats_base_by_30_points(tmp_path):
    began = time.time()
    settings = get_settings(runs_dir=tmp_path / "runs")  # the model cache stays the shared one: SmolLM2 converts once
    run = open_run(create_run("agents/industry_tools", "cpu-x86", settings))
    run_stage_inline(run, "prepare")
    stats = read_json(run.dir / "data" / "stats.json")
    assert stats["records"] == {"train": 240, "dev": 48, "test": 48}
    assert 0 < stats["label_tokens"] < stats["train_tokens"] / 3  # the calls and answers only
    run_stage_inline(run, "train")
    assert read_json(run.dir / "train" / "summary.json")["steps"] == run.recipe.training.max_steps
    run_stage_inline(run, "evaluate")
    results = read_json(run.dir / "eval" / "results.json")

    base, tuned = results["models"]["base"], results["models"]["tuned"]
    report = {"seconds": round(time.time() - began), "train": read_json(run.dir / "train" / "summary.json"),
              "base": base["overall"], "tuned": tuned["overall"],
              "per_category": {c: (base["per_category"][c]["task_success"], row["task_success"])
                               for c, row in tuned["per_category"].items()}}
    print(json.dumps(report, indent=1))
    assert results["main_metric"] == "task_success" and results["config"]["n"] == 48
    assert tuned["overall"]["task_success"] >= base["overall"]["task_success"] + 0.30, report
    assert tuned["overall"]["right_tool_rate"] > base["overall"]["right_tool_rate"], report

    samples = [json.loads(line) for line in (run.dir / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 96
    assert replay_samples(samples) == []  # every observation is what the tools return, every score its trace's
    assert (run.dir / "eval" / "lm_eval" / "tuned_agent.json").is_file()
    run_stage_inline(run, "showcase")
    assert verify_bundle(run.dir / "showcase") == []
    assert (run.dir / "showcase" / "report" / "agent.html").is_file()
