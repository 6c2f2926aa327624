"""The resonance loop on the smoke recipe: a round runs, dataset versions are written, only dev drives selection, new
data is decontaminated against the sealed test split, and saved predictions are re-scored without a model."""
import json
import shutil

from mdr_stack.data_formats import load_splits
from mdr_stack.evaluate import rescore_run
from mdr_stack.pipeline import open_run
from mdr_stack.recipes import load_recipe
from mdr_stack.resonance import candidate_pool, resonate
from mdr_stack.settings import get_settings


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_targeted_round_on_the_smoke_recipe(isolated, tmp_path):
    settings = get_settings()
    recipe = load_recipe("smoke/tiny")
    splits = load_splits(recipe)
    planted = {**splits["test"][0], "id": "planted-test-copy"}
    pool = tmp_path / "pool.jsonl"
    candidates = candidate_pool(recipe, n=120, seed=5) + [planted]
    pool.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in candidates), encoding="utf-8")

    parent = resonate("smoke/tiny", rounds=1, budget=6, settings=settings, pool=pool)

    record = json.loads((parent / "resonance.json").read_text())
    assert [r["round"] for r in record["targeted"]] == [0, 1]
    assert (parent / "resonance.png").stat().st_size > 0 and "targeted" in (parent / "resonance.md").read_text()
    version = parent / "data" / "targeted" / "round-1"
    train = read_jsonl(version / "train.jsonl")
    assert len(train) == len(splits["train"]) + 6
    card = json.loads((version / "card.json").read_text())
    assert card["added"] == 6 and sum(card["allocation"].values()) == 6

    dev_ids = {r["id"] for r in splits["dev"]}
    test_ids = {r["id"] for r in splits["test"]}
    assert card["selection_inputs"]["split"] == "dev"
    assert set(card["selection_inputs"]["failure_ids"]) <= dev_ids
    assert not set(card["selection_inputs"]["failure_ids"]) & test_ids
    assert all(item["similar_to"] in dev_ids for item in card["items"] if "similar_to" in item)
    removed = {r["id"]: r for r in card["decontamination"]["removed"]}
    assert removed["planted-test-copy"]["split"] == "test"
    test_prompts = {r["messages"][0]["content"] for r in splits["test"]}
    assert not any(r["messages"][0]["content"] in test_prompts for r in train)

    child = parent / record["targeted"][1]["run"]
    assert open_run(child).recipe.datasets[0].path == str(version.resolve())
    diagnosis = json.loads((child / "eval" / "diagnosis.json").read_text())
    assert diagnosis["split"] == "dev" and diagnosis["test"]["sealed"]

    before = json.loads((child / "eval" / "results.json").read_text())
    shutil.rmtree(isolated["MDR_MODEL_CACHE"])  # no model to run: rescoring reads the saved predictions only
    after = rescore_run(child)
    assert after["models"]["tuned"]["overall"] == before["models"]["tuned"]["overall"]
    assert after["models"]["base"]["per_category"] == before["models"]["base"]["per_category"]
    assert "rescored" in after["config"]
    assert (child / "eval" / "lm_eval" / "tuned_generation.json").is_file()
