"""The documentation: README.md and nbs/index.ipynb say the same (CI reads its test command from the README), nbdev
turns the catalogue notebook into tables of every shipped recipe and profile, and, where Quarto is installed,
`nbdev-docs` builds the whole site and `nbdev-readme` renders the README, both into a temporary copy."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mdr_stack.hardware import list_profiles
from mdr_stack.recipes import list_recipes

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # nbdev's commands, and quarto when the quarto-cli package is installed
PATH = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
QUARTO = shutil.which("quarto", path=PATH)
needs_quarto = pytest.mark.skipif(QUARTO is None, reason="Quarto is not installed (pip install quarto-cli; its "
                                  "sdist downloads Quarto from GitHub, so it cannot install offline)")


def ci_awk_program() -> str:
    "The awk program .ci/run uses to read the test command out of README.md."
    found = re.search(r"awk '([^']*<!-- test-command -->[^']*)' README\.md", (REPO / ".ci" / "run").read_text())
    assert found, ".ci/run no longer reads the test command with awk: update this test"
    return found.group(1)


def command_after(marker: str, readme: Path) -> str:
    "The command of the first bash block after `<!-- marker -->` in `readme`, read the way .ci/run reads it."
    program = ci_awk_program().replace("<!-- test-command -->", f"<!-- {marker} -->")
    return subprocess.run(["awk", program, str(readme)], capture_output=True, text=True, check=True).stdout.strip()


def index_markdown() -> str:
    "The markdown of nbs/index.ipynb, cell after cell."
    cells = json.loads((REPO / "nbs" / "index.ipynb").read_text(encoding="utf-8"))["cells"]
    assert all(c["cell_type"] == "markdown" for c in cells), "index.ipynb is prose only: no code, nothing exported"
    return "\n\n".join("".join(c["source"]) for c in cells) + "\n"


def test_index_carries_the_readme(tmp_path):
    source = tmp_path / "index.md"
    source.write_text(index_markdown(), encoding="utf-8")
    for marker in ("main-command", "test-command"):
        in_readme = command_after(marker, REPO / "README.md")
        assert in_readme, f"README.md has no <!-- {marker} --> block that .ci/run can read"
        assert command_after(marker, source) == in_readme, f"nbs/index.ipynb and README.md differ in the {marker}"
    readme_headings = re.findall(r"^#{1,3} .+$", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.M)
    index_headings = re.findall(r"^#{1,3} .+$", source.read_text(encoding="utf-8"), flags=re.M)
    assert readme_headings == index_headings


def project_copy(tmp_path: Path, *notebooks: str) -> Path:
    "pyproject.toml and nbs/ (all of it, or only `notebooks` with the site's config) in a temporary folder."
    root = tmp_path / "project"
    (root / "nbs").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", root)
    shutil.copy(REPO / "README.md", root)
    if notebooks:
        for name in (*notebooks, "_quarto.yml", "nbdev.yml", "styles.css"):
            shutil.copy(REPO / "nbs" / name, root / "nbs" / name)
    else:
        shutil.copytree(REPO / "nbs", root / "nbs", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "sidebar.yml"))
    return root


def markdown_outputs(notebook: Path) -> str:
    "Every text/markdown output of a processed notebook."
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(o.get("data", {}).get("text/markdown", "")) for c in cells for o in c.get("outputs", []))


def test_catalogue_tables_are_generated(tmp_path):
    "nbdev's docs processing (the part of nbdev-docs before Quarto) runs the catalogue's exec_doc cells."
    root = project_copy(tmp_path, "95_catalogue.ipynb")
    done = subprocess.run([sys.executable, "-c", "from nbdev.serve import proc_nbs; proc_nbs(n_workers=0)"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = markdown_outputs(root / "_proc" / "95_catalogue.ipynb")
    for name in [*list_recipes(), *list_profiles()]:
        assert f"| `{name}` |" in tables, f"{name} is missing from the catalogue"


@needs_quarto
def test_site_builds(tmp_path):
    root = project_copy(tmp_path)
    env = {**os.environ, "PATH": PATH}
    done = subprocess.run([str(BIN / "nbdev-docs")], cwd=root, env=env, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    site = root / "_docs"
    catalogue = (site / "catalogue.html").read_text(encoding="utf-8")
    for name in [*list_recipes(), *list_profiles()]:
        assert f"<code>{name}</code>" in catalogue, f"{name} is missing from the catalogue page"
    for notebook in sorted((REPO / "nbs").rglob("*.ipynb")):  # a page per notebook: modules, stages, tutorial
        relative = notebook.relative_to(REPO / "nbs")
        page = site / relative.parent / re.sub(r"^\d+[a-zA-Z0-9]*_", "", relative.name.lower())
        assert page.with_suffix(".html").is_file(), f"no page for nbs/{relative}"
    tutorial = (site / "tutorials" / "byod.html").read_text(encoding="utf-8")
    assert "verified" in tutorial, "the tutorial's outputs (exec_doc cells) are missing from its page"


@needs_quarto
def test_readme_renders_stably(tmp_path):
    root = project_copy(tmp_path, "index.ipynb")
    env = {**os.environ, "PATH": PATH}
    renders = []
    for _ in range(2):
        done = subprocess.run([str(BIN / "nbdev-readme")], cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        renders.append((root / "README.md").read_text(encoding="utf-8"))
    assert renders[0] == renders[1], "nbdev-readme is not stable: a second run changed README.md"
    for marker in ("main-command", "test-command"):
        assert command_after(marker, root / "README.md") == command_after(marker, REPO / "README.md"), (
            f"the rendered README loses the {marker} for .ci/run's awk (Quarto writes '``` bash', with a space)")
