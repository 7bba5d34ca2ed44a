"""``fedcare simulate`` / ``python -m simulations.run``: N hospitals on Flower's simulation engine.

python -m simulations.run num_sites=5 num_rounds=3 privacy.target_epsilon=4
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from common.config import SimulationConfig
from common.console import configure_logging, quiet_simulation_engine
from common.datasets import check_trainable, load_site_data
from common.errors import FedcareError
from common.files import make_private_dir
from common.model import resolve_model
from common.site import write_simulated_sites
from server.compose import compose
from server.server_app import make_server_app, new_run_directory

log = logging.getLogger("fedcare.simulate")


def simulate(overrides: list[str]) -> dict[str, Any]:
    """Compose the config, run the simulation, and return the run's ``summary.json`` contents.

    Raises:
        FedcareError: when the run ended without writing its summary (see the log above it).
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging()
    cfg, raw = compose(overrides)
    quiet_simulation_engine(cfg.simulation.verbose)
    sites = []
    for index in range(cfg.num_sites):  # fail fast, before any worker starts or folder is made, on unusable data
        site = load_site_data(cfg.data, index, cfg.num_sites)
        check_trainable(site, cfg.data, cfg.train.batch_size)
        sites.append(site)
    make_private_dir(cfg.output_dir, "output_dir")
    resolve_model(cfg.model)  # convert the GGUF once here, not in every worker at the same time
    out = new_run_directory(cfg)
    log.info(
        "run directory %s: %d sites x %d rounds, model %s, DP %s",
        out.path,
        cfg.num_sites,
        cfg.num_rounds,
        cfg.model.name_or_path,
        f"on (target epsilon {cfg.privacy.target_epsilon:g} per site)" if cfg.privacy.enabled else "OFF",
    )
    for index, site in enumerate(sites):
        log.info("site-%d: %s, %d records", index, site.name, len(site.records))
    del sites

    if cfg.simulation.engine == "inprocess":  # one process, no Ray: the real ServerApp loop and ClientApp
        from simulations.inprocess import run_inprocess

        run_inprocess(cfg, raw, out)
    else:
        from flwr.simulation import run_simulation

        from client.client_app import site_app

        # Each virtual hospital is a site like any other: its own site.yaml, ledger, released updates and
        # egress log in <run>/sites/site-N/ (written from the config's data, privacy and limits).
        sites_dir = (out.path / "sites").resolve()
        write_simulated_sites(cfg, sites_dir)
        client_app = site_app(sites_dir)
        backend_config = ray_backend_config(cfg.simulation, os.cpu_count() or 1)
        # Ray lowers its workers to nice 15, so a simulation's sites would yield to any other program on the
        # machine (measured here: round 0 of the demo took 4 min instead of 80 s next to two nice-19 tests).
        # The sites are this command's work: they run at its priority (RAY_worker_niceness overrides it).
        os.environ.setdefault("RAY_worker_niceness", "0")
        server_app = make_server_app(cfg, raw, out)
        if cfg.strategy.secure_aggregation:  # SecAgg+ hook: Flower's legacy SecAgg+ workflow and its ClientApp
            from client.secure_app import secure_site_app
            from server.secure import make_secure_server_app

            client_app = secure_site_app(sites_dir)
            server_app = make_secure_server_app(cfg, raw, out)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=cfg.num_sites,
            backend_config=backend_config,
            verbose_logging=cfg.simulation.verbose,
        )
    summary_path = out.path / "summary.json"
    if not summary_path.exists():
        raise FedcareError(f"simulation ended without {summary_path}; see the errors above")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    summary["sites_never_trained"] = sites_never_trained(summary, cfg.num_sites)
    from common.report import write_report
    from simulations.report import evaluate_run, exact_losses

    summary["evaluation"] = evaluate_run(cfg, out.path, summary["adapter_dir"])
    exact = exact_losses(cfg, out.path)
    summary["exact_loss_by_round"] = [r["mean"] for r in exact["by_round"]] if exact else None
    summary["exact_loss"] = exact
    summary["report"] = str(write_report(out.path))
    from common.tracking import log_run

    for where in log_run(out.path, cfg.tracking):
        log.info("tracking: logged the run to %s", where)
    return summary


def ray_backend_config(sim: SimulationConfig, cores: int) -> dict[str, Any]:
    """Flower's Ray backend resources: ``cpus_per_site`` cores (0 = all) and ``gpus_per_site`` of a GPU
    per ClientApp worker. Each worker caches one base model and serves every site routed to it;
    with a GPU fraction, Ray sets the worker's ``CUDA_VISIBLE_DEVICES`` and ``model.device=auto``
    picks that GPU."""
    resources: dict[str, Any] = {"num_cpus": sim.cpus_per_site or cores, "num_gpus": sim.gpus_per_site}
    init_args: dict[str, Any] = {"num_cpus": cores, "logging_level": "ERROR", "log_to_driver": True}
    if sim.gpus_per_site:
        import torch

        init_args["num_gpus"] = torch.cuda.device_count()
    return {"client_resources": resources, "init_args": init_args}


def sites_never_trained(summary: dict[str, Any], num_sites: int) -> list[str]:
    """Ids of the sites that failed (or were never asked) in every round: the adapter was trained without them."""
    trained = {site["site_id"] for site in summary.get("sites", [])}
    return [f"site-{i}" for i in range(num_sites) if f"site-{i}" not in trained]


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Hydra's basic-sweeper expansion of ``key=a,b,c`` overrides into one override list per job.

    Raises:
        ConfigError: on an override Hydra cannot parse.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from common.errors import ConfigError

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"config overrides {overrides}: {err}") from err
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def multirun(overrides: list[str]) -> int:
    """``fedcare simulate --multirun key=a,b ...``: one simulation per combination, each in its own
    process, under ``output_dir/multirun/<UTC time>/<job>``; then the sweep's privacy-utility report."""
    import subprocess
    from datetime import UTC, datetime
    from pathlib import Path

    from common.report import write_sweep_report

    jobs = sweep_jobs(overrides)
    keys = {o.split("=", 1)[0] for o in overrides}
    cfg, _ = compose([o for o in jobs[0] if o.split("=", 1)[0].lstrip("+") != "run_name"])  # output_dir is kept
    root = Path(cfg.output_dir) / "multirun" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    (root / "jobs.json").write_text(json.dumps([{"job": i, "overrides": job} for i, job in enumerate(jobs)], indent=2))
    failed = []
    for i, job in enumerate(jobs):
        job = [o for o in job if o.split("=", 1)[0] not in ("output_dir", "run_name")]
        print(f"[multirun {i + 1}/{len(jobs)}] {' '.join(o for o in job if o.split('=', 1)[0] in keys)}", flush=True)
        # Quoted: the job number names a folder, so Hydra must read it as a string, not an int.
        command = [sys.executable, "-m", "simulations.run", *job, f"output_dir={root}", f"run_name='{i}'"]
        code = subprocess.run(command, check=False).returncode
        if code != 0:
            failed.append(i)
    if len(failed) == len(jobs):
        raise FedcareError(
            f"sweep: none of the {len(jobs)} runs finished (see the errors above); nothing to plot in {root}"
        )
    report = write_sweep_report(root)
    print(f"\nsweep: {len(jobs) - len(failed)}/{len(jobs)} runs finished in {root}\nprivacy-utility report: {report}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--multirun" in args or "-m" in args:
        return multirun([a for a in args if a not in ("--multirun", "-m")])
    summary = simulate(args)
    print_summary(summary)
    rerun = " ".join(["fedcare compare --reuse-run", summary["run_dir"], *args]).strip()
    print(
        "baselines on these sites (each alone, all data pooled with and without DP; same steps and epsilon; "
        f"this run is the federated arm): {rerun}"
    )
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    """The end of a run's console: held-out loss by round, epsilon per site, what the sites released, the
    per-site gain table and the report's path; raises when a site never trained."""
    eps = ", ".join(
        f"{s['site_id']} {s['epsilon']:.2f}/{s['target_epsilon']:g}"
        if summary["dp_enabled"]
        else f"{s['site_id']} DP off"
        for s in summary["sites"]
    )
    released = " -> ".join(f"{x:.3f}" for x in summary["eval_loss_by_round"])
    exact = summary.get("exact_loss_by_round")
    losses = (
        f"held-out loss by round: {' -> '.join(f'{x:.3f}' for x in exact)} (exact; the sites released {released})"
        if exact
        else f"held-out loss by round: {released}"
    )
    print(
        f"\n{losses}\nepsilon spent / target: {eps}\n"
        f"global adapter: {summary['adapter_dir']}\nsummary: {summary['run_dir']}/summary.json "
        f"({summary['wall_seconds']:.0f} s)"
    )
    missing = summary["sites_never_trained"]
    if missing:  # the run "worked", but not for these hospitals: say so and do not exit 0
        raise FedcareError(
            f"{', '.join(missing)} did not train in any round (see the warnings above); the global "
            "adapter was trained without them"
        )
    from simulations.report import gain_table, released_task_line

    if summary.get("task_metrics"):
        print(released_task_line(summary["task_metrics"]))
    table = gain_table(summary.get("evaluation"), summary.get("exact_loss"))
    if table:
        print(f"\n{table}\n")
    print(f"report: {summary['report']}")


if __name__ == "__main__":
    raise SystemExit(main())
