"""The wheel carries the recipes, profiles and stage notebooks: `mdr` works from a fresh venv outside the repo."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, REPO], check=True)
    wheel = next(dist.glob("mdr_stack-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    # The heavy dependencies (torch, transformers, ...) come from this environment through a .pth file, so the
    # test installs only the wheel itself; mdr_stack must then come from the new venv, not from the checkout.
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin" / "pip", "install", "--no-deps", "--quiet", wheel], check=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "MDR_RUNS_DIR": str(tmp_path / "runs"), "MDR_MODEL_CACHE": str(tmp_path / "models"),
           # the borrowed dependencies' data files (nbconvert's templates) live under this environment's prefix
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}
    env.pop("MDR_SETTINGS", None)

    def mdr(*args):
        return subprocess.run([venv / "bin" / "mdr", *args], capture_output=True, text=True, cwd=outside, env=env)

    where = subprocess.run([venv / "bin" / "python", "-c", "import mdr_stack; print(mdr_stack.__file__)"],
                           capture_output=True, text=True, cwd=outside, env=env).stdout
    assert str(site) in where, where
    listed = mdr("recipes", "list")
    assert listed.returncode == 0 and "power_equipment/dga_iec60599" in listed.stdout, listed.stderr
    assert "cpu-x86" in mdr("profiles", "list").stdout
    assert mdr("validate", "power_equipment/dga_iec60599", "--profile", "cpu-x86").returncode == 0
    assert mdr("--help").returncode == 0
    # outside a checkout the lab opens ./mdr-lab with copies of the shipped stage notebooks
    workspace = subprocess.run([venv / "bin" / "python", "-c", "from mdr_stack.lab import lab_workspace; "
                                "print(lab_workspace()[0])"], capture_output=True, text=True, cwd=outside, env=env)
    assert workspace.stdout.strip() == str(outside / "mdr-lab"), workspace.stderr
    assert (outside / "mdr-lab" / "pipelines" / "20_train.ipynb").is_file()
    done = mdr("run", "smoke/tiny", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = next((tmp_path / "runs").glob("smoke/tiny/*"))
    assert (run_dir / "showcase" / "manifest.json").is_file()
