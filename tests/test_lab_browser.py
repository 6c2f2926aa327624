"""`mdr lab` as a researcher meets it: JupyterLab on 127.0.0.1, a real headless Chromium, a stage notebook run by hand.

The workspace is made as from a wheel (the shipped stage notebooks copied into a folder), JupyterLab's own folders
and the scratch runs live in the test's temporary folder, and the browser clicks Run > Run All Cells in
`pipelines/20_train.ipynb`: its first cell makes a scratch run of the smoke recipe, the next trains it (a tqdm progress
bar, which must render as a widget), the last plots the loss (which must render inline). A second test drives
`run_lab`, what `mdr lab` calls, from outside: it serves until Ctrl-C or SIGTERM, then stops the server and its kernels.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NOTEBOOK = "pipelines/20_train.ipynb"


def browser_missing() -> str | None:
    "Why the browser test cannot run here, or None."
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed at /usr/bin/chromium (tests/system_deps.sh installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; never `playwright install`: it uses Debian's chromium)"
    return None


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


def jupyter_folders(folder: Path) -> dict[str, str]:
    "JUPYTER_* variables that keep a test server's config, runtime files, settings and workspaces in `folder`."
    names = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_RUNTIME_DIR": "runtime", "JUPYTER_DATA_DIR": "data",
             "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    return {key: str(folder / name) for key, name in names.items()}


@pytest.fixture
def lab(isolated, tmp_path):
    "A JupyterLab server on a free port with its own token, Jupyter folders and temporary folder; stopped after."
    from mdr_stack.lab import lab_workspace, start_lab, stop_lab
    workspace, actions = lab_workspace(tmp_path / "workspace")
    assert actions[Path(NOTEBOOK).name] == "copied"
    jupyter = tmp_path / "jupyter"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = start_lab(workspace, env={**jupyter_folders(jupyter), "TMPDIR": str(scratch)})
    try:
        yield server
    finally:
        code = stop_lab(server)
    assert code == 0, f"JupyterLab exited with {code}; its log: {server.log}"
    assert list((jupyter / "runtime").glob("kernel-*.json")) == []  # the kernel went with the server


def wait_for_output(page, locator, what: str, timeout: float):
    "Wait until `locator` is in the page; fail at once, with the traceback's text, if a cell raised an error."
    errors = page.locator(".jp-OutputArea-output").filter(has_text="Traceback (most recent call last)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if errors.count():
            pytest.fail(f"a cell failed while waiting for {what}:\n{errors.first.inner_text()[-3000:]}")
        if locator.count():
            return locator.first
        page.wait_for_timeout(250)
    pytest.fail(f"no {what} after {timeout:.0f} s; outputs so far:\n"
                + "\n---\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())[-3000:])


@needs_browser
def test_stage_notebook_runs_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    kernel_display = lab.api("/api/kernelspecs")["kernelspecs"][lab.kernel]["spec"]["display_name"]
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab.base_url}/lab/tree/{NOTEBOOK}?token={lab.token}")
            # the notebook was saved with the `python3` kernel; the lab starts the workbench's, without a dialog
            toolbar_kernel = page.locator(".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName")
            toolbar_kernel.filter(has_text=kernel_display).wait_for(timeout=90_000)
            assert page.get_by_role("dialog").count() == 0
            # cells run while the kernel still starts are dropped silently: wait until the status bar says Idle
            page.locator("#jp-main-statusbar").get_by_text(f"{kernel_display} | Idle").wait_for(timeout=90_000)
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            outputs = page.locator(".jp-OutputArea-output")
            first = wait_for_output(page, outputs.filter(has_text="micro-batch"), "the first cell's output", 90)
            trained = wait_for_output(page, outputs.filter(has_text="final loss"), "the training summary", 120)
            bars = page.locator(".jp-OutputArea-output .widget-hbox").filter(has=page.locator(".widget-hprogress"))
            bar = wait_for_output(page, bars.filter(has_text="train"), "the training progress bar widget", 30)
            plot = wait_for_output(page, page.locator(".jp-RenderedImage img"), "the inline loss plot", 60)

            run_line = re.search(r"^run (\S+)$", first.inner_text(), re.M)
            summary = re.search(r"(\d+) steps, final loss ([\d.]+)", trained.inner_text())
            bar_label = bar.inner_text().replace("\u2007", " ")  # tqdm pads with figure spaces
            image_width = plot.evaluate("img => img.naturalWidth")
        finally:
            if "page" in locals():  # what the browser showed, also when a wait failed
                page.screenshot(path=str(tmp_path / "lab.png"))
                print(f"\nscreenshot {tmp_path / 'lab.png'}")
            browser.close()
    seconds = time.monotonic() - started

    assert run_line, first.inner_text()
    run_dir = Path(run_line.group(1))
    assert run_dir.is_relative_to(tmp_path / "tmp")  # the kernel ran in the lab's environment (its TMPDIR)
    assert (run_dir / "train" / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "train" / "loss.png").is_file()
    assert summary and int(summary.group(1)) > 0
    assert re.search(r"train: 100%.*\b(\d+)/\1\b", bar_label, re.S), bar_label  # a finished bar: n/n steps
    assert image_width > 100
    sessions = lab.api("/api/sessions")
    assert [(s["path"], s["kernel"]["name"]) for s in sessions] == [(NOTEBOOK, lab.kernel)]
    print(f"lab: {NOTEBOOK} ran in the browser in {seconds:.0f} s ({summary.group(0)})")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_lab_stops_server_and_kernels(sig, isolated, tmp_path):
    "`run_lab` (what `mdr lab` calls) serves until Ctrl-C or SIGTERM, then shuts down the server and its kernels."
    env = {**isolated, **jupyter_folders(tmp_path / "jupyter")}
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])
    script = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as in a terminal
              "from mdr_stack.lab import run_lab\n"
              "sys.exit(run_lab(root=sys.argv[1], open_browser=False))")
    mdr_lab = subprocess.Popen([sys.executable, "-u", "-c", script, str(tmp_path / "workspace")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in mdr_lab.stdout:
            lines.append(line)
            if line.startswith("JupyterLab: "):
                break
        url = re.search(r"(http://127\.0\.0\.1:\d+)/lab\?token=(\S+)", "".join(lines))
        assert url, "".join(lines)
        base, token = url.groups()

        def api(path, method="GET", payload=None):
            data = json.dumps(payload).encode() if payload is not None else None
            request = urllib.request.Request(base + path, method=method, data=data, headers={
                "Authorization": f"token {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())

        session = api("/api/sessions", "POST", {"path": "pipelines/10_prepare.ipynb", "type": "notebook"})
        assert list(runtime.glob(f"kernel-{session['kernel']['id']}.json"))
        server_pid = json.loads(next(runtime.glob("jpserver-*.json")).read_text())["pid"]
        mdr_lab.send_signal(sig)
        rest, _ = mdr_lab.communicate(timeout=60)
    finally:
        if mdr_lab.poll() is None:
            mdr_lab.kill()
    assert mdr_lab.returncode == 0, "".join(lines) + rest
    assert "stopping JupyterLab" in rest
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)  # the server is gone
    assert list(runtime.glob("kernel-*.json")) == []  # and so is the kernel
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/api/status", timeout=5)
