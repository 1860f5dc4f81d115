"""What a user sees in JupyterLab, checked in a real browser (issue 23, item 5).

JupyterLab starts from the kit's venv on loopback; headless Chromium from Debian's packages,
driven by Playwright's Python package pointed at that browser, opens notebooks 00 and 02 with
smoke params and runs every cell through the UI (Run > Run All Cells). No cell may show an
error, a progress widget and an inline image must be rendered, and a screenshot is saved
(``LLMTRSR_SCREENSHOTS=docs`` writes the ones the README shows). CI installs the browser
(``.ci/run``); elsewhere the test is skipped, with what to install, when there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from tests.conftest import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("00_data_exploration", "02_summarization")
RUN_SECONDS = int(os.environ.get("LLMTRSR_LAB_SECONDS", "600"))


def browser_or_skip() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        message = ("no Chromium or Playwright: apt-get install chromium; pip install "
                   "playwright (.ci/run installs both)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_settings(folder: Path) -> None:
    """JupyterLab user settings: every cell kept in the page (no windowing, so the checks see
    all outputs) and no news or update pop-up over the notebook."""
    for plugin, values in {
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                            "checkForUpdates": False}}.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def start_lab(root: Path, settings: Path, port: int, token: str, log: Path) -> subprocess.Popen:
    jupyter = Path(sys.executable).with_name("jupyter")
    lab = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={settings.parent / 'workspaces'}"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=root)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}",
                                   timeout=2)
            return lab
        except OSError:
            if lab.poll() is not None:
                break
            time.sleep(0.5)
    lab.terminate()
    raise AssertionError(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_jupyterlab_runs_the_notebooks_in_a_real_browser(tmp_path, movielens_dir):
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    from playwright.sync_api import sync_playwright

    chromium = browser_or_skip()
    lab_root = tmp_path / "lab"
    lab_root.mkdir()
    overrides = smoke_overrides(tmp_path / "work", movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}",
                                f"figures_dir={tmp_path / 'figures'}")
    for name in NOTEBOOKS:
        notebook = parameterize_notebook(
            load_notebook_node(str(ROOT / "notebooks" / f"{name}.ipynb")),
            {"params_file": str(ROOT / "params" / "smoke.yaml"), "overrides": overrides})
        nbformat.write(notebook, lab_root / f"{name}.ipynb")
    write_settings(tmp_path / "settings")
    port, token = free_port(), os.urandom(16).hex()
    lab = start_lab(lab_root, tmp_path / "settings", port, token, tmp_path / "lab.log")
    shots = Path(os.environ.get("LLMTRSR_SCREENSHOTS") or tmp_path / "screenshots")
    if not shots.is_absolute():
        shots = ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium,
                                                 args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name in NOTEBOOKS:
                try:
                    run_notebook(page, port, token, name, shots)
                except Exception:
                    page.screenshot(path=str(shots / f"failed_{name}.png"))
                    raise
            browser.close()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
    assert (shots / "jupyterlab_02_summarization.png").stat().st_size > 20_000


# The visible notebook's code-cell prompts: "[ ]:" not run, "[*]:" queued or running, "[3]:".
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
PROMPTS = f"{PANEL} .jp-CodeCell .jp-InputArea-prompt"


def prompts(page) -> list[str]:
    return [text.strip() for text in page.locator(PROMPTS).all_inner_texts()]


def wait_until(condition, seconds: float, what: str, page) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"{what} within {seconds:.0f} s; prompts: {prompts(page)}")


def run_notebook(page, port: int, token: str, name: str, shots: Path) -> None:
    """Open one notebook, run every cell through the menu, check what it shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}.ipynb?token={token}")
    page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=120_000)
    select = page.locator(".jp-Dialog button", has_text="Select")
    try:  # JupyterLab may ask which kernel to start: the notebook's own, Python 3
        select.first.wait_for(timeout=15_000)
        select.first.click()
    except PlaywrightTimeout:
        pass
    page.get_by_text("Kernel status: Idle").first.wait_for(state="attached",
                                                          timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    wait_until(lambda: any(p != "[ ]:" for p in prompts(page)), 60, "no cell started", page)
    # Done when no cell is queued or running; a cell that fails stops the ones after it,
    # which stay "[ ]:" and are reported below.
    wait_until(lambda: not any("*" in p for p in prompts(page)), RUN_SECONDS,
               "the cells did not finish", page)
    errors = page.locator(f"{PANEL} .jp-OutputArea-output", has_text="Traceback").count()
    unrun = [p for p in prompts(page) if p == "[ ]:"]
    image = page.locator(f"{PANEL} .jp-OutputArea-output img")
    widget = page.locator(f"{PANEL} .jp-OutputArea-output .widget-progress, "
                          f"{PANEL} .jp-OutputArea-output .jupyter-widgets")
    images, widgets = image.count(), widget.count()
    shown = widget if name.startswith("02") and widgets else image
    if shown.count():  # the screenshot shows what is checked: a widget, or a figure
        shown.first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / f"jupyterlab_{name}.png"), full_page=False)
    assert errors == 0 and not unrun, f"{name}: a cell shows an error ({prompts(page)})"
    assert images >= 1, f"{name}: no inline image rendered"
    if name.startswith("02"):
        assert widgets >= 1, f"{name}: no progress widget rendered"
