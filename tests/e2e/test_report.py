"""The run report in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.test_simulation import check_egress, check_run, run_cli

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):  # CI installs them (Makefile `browser`): missing there is a failure
            pytest.fail("chromium and chromedriver are not installed (make browser)")
        pytest.skip("chromium / chromedriver not installed (Debian: apt-get install chromium chromium-driver)")
    return chromium, driver


def open_in_chromium(page: Path) -> dict:
    """Load ``page`` in headless Chromium; return its title, images and whether each loaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="fedcare-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        browser.get(page.resolve().as_uri())
        return browser.execute_script(
            "return {title: document.title, headings: [...document.querySelectorAll('h2')].map(h => h.textContent),"
            " images: [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete,"
            " width: i.naturalWidth, height: i.naturalHeight})), tables: document.querySelectorAll('table').length};"
        )
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_smoke_run_report_renders_with_every_plot(tmp_path: Path, cache_dir: Path) -> None:
    # The in-process engine (no Ray start-up; Ray's runs: test_simulation.py).
    args = ["simulate", "+experiment=smoke", "simulation.engine=inprocess", f"output_dir={tmp_path}", "run_name=rep"]
    result = run_cli(args, cache_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "rep"
    summary = check_run(run_dir, sites=2, rounds=2, dp=True)
    # simulation.engine=inprocess: no Ray, every site in the driver's process; the run directory is
    # the same as Flower's engine writes, plus the exact held-out loss the sites measured per round.
    from safetensors.numpy import load_file

    check_egress(run_dir, load_file(str(Path(summary["adapter_dir"]) / "adapter_model.safetensors")), sites=2, rounds=2)
    exact = json.loads((run_dir / "exact_loss.json").read_text())
    assert [r["round"] for r in exact["by_round"]] == [0, 1, 2]
    assert all(set(r["sites"]) == {"site-0", "site-1"} for r in exact["by_round"])
    means = " -> ".join(f"{r['mean']:.3f}" for r in exact["by_round"])
    assert f"held-out loss by round: {means} (exact; the sites released" in result.stdout
    assert "Ray" not in result.stderr and "exact held-out" in (run_dir / "report.html").read_text()
    assert f"report: {run_dir}/report.html" in result.stdout
    assert result.stdout.rstrip().endswith(
        f"fedcare compare --reuse-run {tmp_path / 'rep'} {' '.join(args[1:])}"  # the run's own overrides
    )
    assert "what each site gained: base model -> final federated adapter" in result.stdout  # the gain table
    assert all(f"\n{site} " in result.stdout for site in ("site-0", "site-1", "pooled")) and "macro-R" in result.stdout
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert set(evaluation["sites"]) == {"site-0", "site-1"} and evaluation["kind"] == "choice"
    pooled = evaluation["pooled"]["final"]
    assert pooled["metrics"]["n"] == 32 and pooled["fairness"]["worst_group"] in pooled["groups"]

    page = open_in_chromium(run_dir / "report.html")
    assert page["title"] == "fedcare run rep"
    srcs = sorted(i["src"] for i in page["images"])
    assert srcs == sorted(f"report/{n}.png" for n in ("loss", "epsilon", "bytes", "task", "confusion"))
    broken = [i["src"] for i in page["images"] if not (i["complete"] and i["width"] > 100 and i["height"] > 100)]
    assert not broken, f"images that did not load: {broken}"
    assert {"Held-out loss", "Privacy budget", "Fairness", "Privacy"} <= set(page["headings"])

    # `fedcare report RUN_DIR` rebuilds the page from the run's files alone.
    (run_dir / "report.html").unlink()
    shutil.rmtree(run_dir / "report")
    rebuilt = run_cli(["report", str(run_dir)], cache_dir, tmp_path, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert len(open_in_chromium(run_dir / "report.html")["images"]) == 5

    # The baselines command the run printed works as printed: this run is the federated arm, not run again.
    command = shlex.split(result.stdout.rstrip().rsplit(": ", 1)[1])
    assert command[:2] == ["fedcare", "compare"]
    summary = (run_dir / "summary.json").read_bytes()
    compared = run_cli(command[1:], cache_dir, tmp_path, timeout=600)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert (run_dir / "summary.json").read_bytes() == summary  # the federated run was reused, not run again
    out = json.loads((run_dir / "compare.json").read_text())
    assert out["run_dir"] == str(run_dir) and set(out["sites"]) == {"site-0", "site-1"}
    assert "no site worse off than alone: " in compared.stdout


def test_multirun_sweep_draws_the_privacy_utility_curve(tmp_path: Path, cache_dir: Path) -> None:
    result = run_cli(
        [
            "simulate",
            "--multirun",
            "privacy.target_epsilon=2,4,8,16",  # 4 points (at epsilon 1 the tiny sites refuse: noise over their cap)
            "+experiment=smoke",
            "num_rounds=1",
            "data.task_items_per_site=4",  # the curve plots the held-out loss: the task evaluation kept short
            "simulation.engine=inprocess",  # each job without a Ray start-up: the sweep is checked, not the engine
            f"output_dir={tmp_path}",
        ],
        cache_dir,
        tmp_path,
        timeout=900,  # four runs one after another
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [root] = (tmp_path / "multirun").iterdir()
    for job, epsilon in enumerate((2.0, 4.0, 8.0, 16.0)):
        summary = json.loads((root / str(job) / "summary.json").read_text())
        assert summary["sites"][0]["target_epsilon"] == epsilon
    assert f"privacy-utility report: {root}/sweep.html" in result.stdout
    page = open_in_chromium(root / "sweep.html")
    assert [i["src"] for i in page["images"]] == ["report/privacy_utility.png"]
    assert page["images"][0]["complete"] and page["images"][0]["width"] > 100
