"""Showcase bundles for real: build from a run whose evaluation ran through papermill, verify, pack and unpack
(including crafted malicious archives), merged weights equal adapter-on-base, and the demo in headless Chromium."""
import io
import json
import shutil
import tarfile
import urllib.request
from pathlib import Path

import pytest
import torch

from mdr_stack.settings import MdrError
from mdr_stack.showcase import (
    build_bundle,
    pack_bundle,
    read_card_metadata,
    unpack_bundle,
    verify_bundle,
    write_manifest,
)

CHROMIUM = Path("/usr/bin/chromium")
ADAPTER_SCALE = 40.0  # 4 steps on a random tiny model leave the adapter near zero; scaled up, it visibly changes outputs


def scale_adapter(adapter_dir: Path, factor: float):
    "Multiply the LoRA B matrices of a saved adapter by `factor` (so the adapter changes the model's outputs)."
    from safetensors.torch import load_file, save_file
    path = adapter_dir / "adapter_model.safetensors"
    weights = {k: (v * factor if "lora_B" in k else v) for k, v in load_file(path).items()}
    save_file(weights, path, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    "A smoke run with a scaled-up adapter, its evaluation executed by papermill, bundled with merged weights."
    from mdr_stack.pipeline import execute_run, scratch_run
    run = scratch_run("evaluate")
    scale_adapter(run.dir / "train" / "adapter", ADAPTER_SCALE)
    execute_run(run.dir, stages=("evaluate",))
    built = build_bundle(run.dir, out_dir=tmp_path_factory.mktemp("showcase") / "bundle", merge=True)
    yield built
    shutil.rmtree(run.dir.parents[2], ignore_errors=True)


def eval_prompts(bundle: Path) -> list[str]:
    samples = [json.loads(line) for line in (bundle / "samples.jsonl").read_text().splitlines()]
    return [s["prompt"] for s in samples if s["model"] == "tuned"]


def test_bundle_has_everything_and_verifies(bundle):
    assert verify_bundle(bundle) == []
    listed = set(json.loads((bundle / "manifest.json").read_text())["files"])
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/tokenizer.json",
                 "adapter/chat_template.jinja", "merged/model.safetensors", "merged/config.json",
                 "results.json", "samples.jsonl", "recipe.yaml", "profile.yaml", "plan.json", "train/metrics.jsonl",
                 "data/dga_iec60599/README.md", "report/index.html", "report/evaluation.html", "app/app.py",
                 "app/demo_app.py", "app/README.md", "provenance.json"):
        assert name in listed, name
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in bundle.rglob("*"))
    meta = read_card_metadata((bundle / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["base_model"] == "tiny:llama" and meta["license"] == "apache-2.0"
    assert "industry:power_equipment" in meta["tags"] and "tier:specialized" in meta["tags"]
    results = json.loads((bundle / "results.json").read_text())
    metrics = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["exact_match (tuned)"] == results["models"]["tuned"]["overall"]["exact_match"]
    card = (bundle / "README.md").read_text()
    for section in ("## Intended use and limits", "## Data", "## Hardware and plan", "## Evaluation"):
        assert section in card
    provenance = json.loads((bundle / "provenance.json").read_text())
    assert provenance["seeds"] == {"training": 42} and len(provenance["inputs"]["recipe"]) == 64
    assert provenance["git"] and provenance["versions"]["peft"]
    report = (bundle / "report" / "index.html").read_text()
    assert report.count("<img") >= 3 and 'href="evaluation.html"' in report  # loss, per category, confusion matrices
    if (bundle / "diagnosis.json").is_file():
        assert "<h2>Diagnosis (dev split)</h2>" in report
    executed = (bundle / "report" / "evaluation.html").read_text()
    assert "data:image/png;base64" in executed and "run = open_run" not in executed  # outputs only, with the plot


def test_verify_names_changed_missing_and_rescored(bundle, tmp_path):
    copy = Path(shutil.copytree(bundle, tmp_path / "copy"))
    (copy / "plan.json").write_text("{}")
    (copy / "data" / "dga_iec60599" / "README.md").unlink()
    problems = verify_bundle(copy)
    assert "plan.json: changed (sha256 differs)" in problems
    assert "data/dga_iec60599/README.md: missing" in problems

    fresh = Path(shutil.copytree(bundle, tmp_path / "fresh"))
    lines = [json.loads(line) for line in (fresh / "samples.jsonl").read_text().splitlines()]
    wrong = next(s for s in lines if s["model"] == "tuned" and s["score"] == 0.0)
    wrong["prediction"] = wrong["reference"]  # an edited prediction, with the manifest rewritten to hide it
    (fresh / "samples.jsonl").write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in lines))
    write_manifest(fresh)
    problems = verify_bundle(fresh)
    assert any(p.startswith("results.json: tuned overall exact_match") for p in problems), problems
    assert any(p.startswith(f"results.json: tuned {wrong['category']} exact_match") for p in problems), problems

    card = fresh / "README.md"
    card.write_text(card.read_text().replace("library_name: peft", "library_name: transformers"))
    write_manifest(fresh)
    assert "README.md: library_name is 'transformers', not 'peft'" in verify_bundle(fresh)


def test_pack_unpack_round_trip(bundle, tmp_path):
    archive = pack_bundle(bundle, tmp_path / "bundle.tar.gz")
    unpacked = unpack_bundle(archive, tmp_path / "out")
    assert unpacked == tmp_path / "out" / "bundle"
    assert verify_bundle(unpacked) == []
    with pytest.raises(MdrError, match="already exists"):
        unpack_bundle(archive, tmp_path / "out")


def _member(tar, name, data=b"payload", **fields):
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    info.size = len(data) if info.isfile() else 0
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


@pytest.mark.parametrize("evil", [
    dict(name="/tmp/mdr-evil-absolute"),
    dict(name="bundle/../../mdr-evil-dotdot"),
    dict(name="bundle/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    dict(name="bundle/hard", type=tarfile.LNKTYPE, linkname="bundle/manifest.json"),
], ids=["absolute", "dotdot", "symlink", "hardlink"])
def test_unpack_refuses_malicious_archives(bundle, tmp_path, evil):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle / "manifest.json", arcname="bundle/manifest.json")
        _member(tar, **evil)
    with pytest.raises(MdrError, match="refused"):
        unpack_bundle(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert not Path("/tmp/mdr-evil-absolute").exists() and not (tmp_path.parent / "mdr-evil-dotdot").exists()


def test_unpack_refuses_a_changed_file(bundle, tmp_path):
    archive = tmp_path / "changed.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            name = f"bundle/{path.relative_to(bundle).as_posix()}"
            if path.name == "results.json":
                _member(tar, name, b"{}")
            else:
                tar.add(path, arcname=name)
    with pytest.raises(MdrError, match="results.json: changed"):
        unpack_bundle(archive, tmp_path / "dest")


@torch.inference_mode()
def greedy_ids(model, tokenizer, prompt: str, n: int = 8) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                         pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    return out[0, batch["input_ids"].shape[1]:].tolist()


def test_merged_weights_equal_adapter_on_base(bundle):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = json.loads((bundle / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(bundle / "adapter")
    load = dict(use_safetensors=True, dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(bundle / "merged", **load).eval()
    on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, **load), bundle / "adapter").eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir, **load).eval()
    prompts = eval_prompts(bundle)
    assert len(prompts) == 12

    batch = tokenizer(prompts[0], return_tensors="pt")
    with torch.inference_mode():
        logits = {name: m(**batch).logits for name, m in (("merged", merged), ("adapter", on_base), ("base", base))}
    assert torch.allclose(logits["merged"], logits["adapter"], atol=1e-4)
    assert (logits["adapter"] - logits["base"]).abs().max() > 0.1  # the adapter really changes the model

    merged_ids = [greedy_ids(merged, tokenizer, p) for p in prompts]
    adapter_ids = [greedy_ids(on_base, tokenizer, p) for p in prompts]
    base_ids = [greedy_ids(base, tokenizer, p) for p in prompts]
    assert merged_ids == adapter_ids
    assert merged_ids != base_ids  # so equality above is not a tie between two copies of the base


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                    "(tests/system_deps.sh installs it)")
def test_demo_in_headless_browser(bundle, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from mdr_stack.demo_app import answer, load_bundle_models, serve_bundle

    app, url = serve_bundle(bundle, block=False)
    try:
        assert url.startswith("http://127.0.0.1:")
        prompt = eval_prompts(bundle)[0]
        models = load_bundle_models(bundle)
        expected_tuned = answer(models.tuned, models.tokenizer, prompt, 16)
        expected_base = answer(models.base, models.tokenizer, prompt, 16)
        assert expected_tuned != expected_base
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            page.wait_for_selector("#prompt textarea", timeout=30_000)
            expect(page.get_by_text("Prompts from the evaluation set").first).to_be_visible()
            expect(page.get_by_text(prompt[:30]).first).to_be_visible()  # the first example prompt
            page.locator("#prompt textarea").fill(prompt)
            page.locator("#ask").click()
            tuned = page.locator("#tuned-answer textarea")
            page.wait_for_function("() => document.querySelector('#tuned-answer textarea').value.length > 0",
                                   timeout=60_000)
            assert tuned.input_value() == expected_tuned
            assert page.locator("#base-answer textarea").input_value() == expected_base
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            page.get_by_role("tab", name="Report").click()
            report_link = page.get_by_role("link", name="Open the report in its own tab").get_attribute("href")
            browser.close()
        with urllib.request.urlopen(url.rstrip("/") + report_link, timeout=30) as response:
            assert response.status == 200 and b"evaluation report" in response.read()
        assert (tmp_path / "demo.png").stat().st_size > 10_000
        print(f"\nscreenshot: {tmp_path / 'demo.png'}")
    finally:
        app.close()
