"""The agent smoke recipe (`smoke/agent_tiny`, the tiny random llama) through the real `mdr` command and papermill
kernels: the prepare, train, evaluate and showcase stages dispatch on `kind: agent`; results.json holds task success
for base and tuned; the bundle carries the tool schemas and the traces and verifies; a tampered trace fails both
`mdr showcase verify` and `mdr agent replay`; `mdr agent ask` and `mdr agent eval` work on the run. The tiny model's
scores mean nothing (about 0); the SmolLM2 measurement is tests/test_agents.py."""
import json
import shutil
from pathlib import Path

from conftest import mdr


def only_run_dir(runs: Path) -> Path:
    found = [p for p in runs.glob("*/*/*") if (p / "run.json").is_file()]
    assert len(found) == 1, found
    return found[0]


def tamper(samples: list[dict]) -> int:
    "Change one recorded tool result (or, when no call was made, one answer) in a tuned trace; returns its line."
    tuned = [i for i, s in enumerate(samples) if s["model"] == "tuned"]
    with_call = [i for i in tuned if any(m["role"] == "tool" for m in samples[i]["trace"])]
    answered = [i for i in tuned if samples[i]["stopped"] == "answer"]
    assert with_call or answered, "nothing to tamper with"
    line = (with_call or answered)[0]
    trace = samples[line]["trace"]
    turn = (next(i for i, m in enumerate(trace) if m["role"] == "tool") if with_call
            else max(i for i, m in enumerate(trace) if m["role"] == "assistant"))
    trace[turn]["content"] = '{"forged": true}' if with_call else trace[turn]["content"] + " (forged)"
    return line + 1


def test_agent_recipe_through_the_pipeline(isolated, tmp_path):
    from mdr_stack.showcase import write_manifest

    done = mdr("run", "smoke/agent_tiny", "--profile", "cpu-x86", "--quiet", env=isolated)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "task_success on the test split" in done.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    info = json.loads((run_dir / "run.json").read_text())
    assert {s: v["status"] for s, v in info["stages"].items()} == dict.fromkeys(
        ["prepare", "train", "evaluate", "showcase"], "done")

    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    assert stats["records"] == {"train": 12, "dev": 12, "test": 12} and stats["agent"]["max_steps"] == 2
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["main_metric"] == "task_success" and results["config"]["n"] == 6
    for model in ("base", "tuned"):
        overall = results["models"][model]["overall"]
        assert 0 <= overall["task_success"] <= 1 and {"right_tool_rate", "steps_per_task"} <= set(overall)
        assert all("task_success" in row for row in results["models"][model]["per_category"].values())
    samples = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and all(isinstance(s["trace"], list) for s in samples)

    bundle = run_dir / "showcase"
    tools = json.loads((bundle / "tools.json").read_text())
    assert [t["function"]["name"] for t in tools][:2] == ["dga_ratios", "iec60599_diagnosis"]
    page = (bundle / "report" / "agent.html").read_text()
    assert all(s["id"] in page for s in samples)
    assert "task_success (tuned)" in (bundle / "README.md").read_text()
    verified = mdr("showcase", "verify", bundle, env=isolated)
    assert verified.returncode == 0, verified.stderr
    replayed = mdr("agent", "replay", run_dir, env=isolated)
    assert replayed.returncode == 0 and "12 traces" in replayed.stdout, replayed.stdout + replayed.stderr

    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    line = tamper(samples)
    (forged / "samples.jsonl").write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    write_manifest(forged)  # a forger who rewrites the manifest too: only the replay can tell
    failed = mdr("showcase", "verify", forged, env=isolated)
    assert failed.returncode == 1 and f"samples.jsonl:{line} (tuned " in failed.stderr, failed.stderr
    assert mdr("agent", "replay", forged / "samples.jsonl", env=isolated).returncode == 1

    asked = mdr("agent", "ask", run_dir, "A steel plate has CE(IIW) = 0.43. Weldability rating?", "--tools", "steel",
                env=isolated)
    assert asked.returncode == 0 and "**Task.** A steel plate" in asked.stdout, asked.stdout + asked.stderr
    redone = mdr("agent", "eval", run_dir, "--quiet", env=isolated)
    assert redone.returncode == 0 and "task_success" in redone.stdout, redone.stdout + redone.stderr
    again = json.loads((run_dir / "eval" / "results.json").read_text())
    for model in ("base", "tuned"):  # greedy decoding: the same scores again
        assert again["models"][model]["overall"] == results["models"][model]["overall"], model
