"""The default recipe, for real: `mdr demo` fetches SmolLM2-135M, fine-tunes, evaluates and bundles on this CPU."""
import json
import time

from conftest import mdr


def test_demo_beats_base_by_20_points(tmp_path):
    started = time.time()
    done = mdr("demo", "--runs-dir", tmp_path / "runs", "--quiet", timeout=7200)  # a hang guard, not a speed check
    seconds = time.time() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = next((tmp_path / "runs").glob("power_equipment/dga_iec60599/*"))
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    base = results["models"]["base"]["overall"]["exact_match"]
    tuned = results["models"]["tuned"]["overall"]["exact_match"]
    print(f"\nmdr demo: {seconds:.0f} s wall; exact match base {base:.2f} -> tuned {tuned:.2f}")
    print(json.dumps({s: v["seconds"] for s, v in json.loads((run_dir / "run.json").read_text())["stages"].items()}))
    assert results["config"]["n"] == 100
    assert tuned - base >= 0.20
