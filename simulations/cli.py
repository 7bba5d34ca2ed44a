"""The ``fedcare`` command line: simulate, evaluate, certs, coordinator, site, verify, audit, check-data, generate.

Errors fedcare raises on purpose (bad config, bad data, exhausted budget) print one line and exit
with status 2; they never print a traceback or any record text.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import FedcareError, printable
from common.files import make_private_dir

_MAX_ERROR_CHARS = 1000  # one readable line; a 5,000-digit value or a long path is cut, not echoed whole


class UsageError(FedcareError, ValueError):
    """The command line itself is wrong (unknown option, missing argument, bad value)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one fedcare line (exit 2) instead of a usage block."""

    def error(self, message: str) -> typing.NoReturn:
        choice = re.match(r"argument \w+: invalid choice: '(.*)' \(choose from (.*)\)$", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            near = difflib.get_close_matches(choice.group(1), options, n=2)
            message = f"unknown command {choice.group(1)!r}" + (
                f"; did you mean {' or '.join(map(repr, near))}?" if near else f"; choose from {', '.join(options)}"
            )
        raise UsageError(f"{self.prog}: {message} (see: {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="fedcare", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser(
        "simulate",
        help="run N hospitals on Flower's simulation engine",
        description="Hydra overrides, e.g.: num_sites=5 num_rounds=3 privacy.target_epsilon=4",
    )
    sim.add_argument("overrides", nargs="*", help="Hydra overrides (key=value, group=option)")
    sim.add_argument(
        "--multirun",
        "-m",
        action="store_true",
        help="sweep: one run per combination of comma-separated values, e.g. privacy.target_epsilon=1,4,8",
    )
    chk = sub.add_parser("check-data", help="validate site data files without training")
    chk.add_argument("files", nargs="+", help="JSONL, JSON, CSV or Parquet files")
    chk.add_argument("--prompt-column", default="", help="column mapping for other shapes")
    chk.add_argument("--completion-column", default="", help="answer column, with --prompt-column")
    prep = sub.add_parser("prepare-model", help="convert/cache the base model once (SmolLM2 GGUF -> safetensors)")
    prep.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny")
    gen = sub.add_parser("generate", help="generate text with the base model plus a saved adapter")
    gen.add_argument("adapter", help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    gen.add_argument("prompt", help="user message")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--key", help="coordinator's public signing key: the adapter is verified before use")
    gen.add_argument("--no-verify", action="store_true", help="use an unsigned adapter (e.g. from a simulation)")
    gen.add_argument("overrides", nargs="*", help="Hydra overrides selecting the base model")
    ver = sub.add_parser("verify", help="check a global adapter's Ed25519 signature")
    ver.add_argument("adapter", help="adapter directory")
    ver.add_argument("--key", required=True, help="the coordinator's public signing key (coordinator.pub)")
    certs = sub.add_parser("certs", help="create the consortium CA, the coordinator's TLS and signing keys, site keys")
    certs.add_argument("--out", required=True, help="folder for the credentials (private keys are 0600)")
    certs.add_argument(
        "--ca-dir",
        help="folder for the consortium's private keys (ca.key, app-signing.key), kept apart from --out and "
        "offline; default: <out>-ca beside --out",
    )
    certs.add_argument("--host", action="append", default=[], help="coordinator DNS name or IP (repeat)")
    certs.add_argument("--site", action="append", default=[], help="site id to create an auth key pair for (repeat)")
    certs.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the named sites' existing keys (rotation); the CA and coordinator keys are kept",
    )
    fp = sub.add_parser("fingerprint", help="print the SHA256 fingerprint of public keys or certificates")
    fp.add_argument("files", nargs="+", help="a .pub (OpenSSH or PEM) or a .crt; compare with what its owner read out")
    coord = sub.add_parser("coordinator", help="run the consortium's SuperLink and submit runs")
    csub = coord.add_subparsers(dest="action", required=True)
    cstart = csub.add_parser("start", help="start the SuperLink with TLS and SuperNode authentication")
    cstart.add_argument("--certs", help="folder made by `fedcare certs`")
    cstart.add_argument("--state-dir", default="coordinator-state", help="SuperLink database folder")
    cstart.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    cstart.add_argument("--port", type=int, default=8000, help="the one SuperLink port (sites and CLI)")
    cstart.add_argument("--insecure", action="store_true", help="NO TLS, NO authentication: local experiments only")
    cenroll = csub.add_parser("enroll", help="register a site's public key with the SuperLink")
    cenroll.add_argument("public_key", help="the site's <site_id>.pub (EC P-384, OpenSSH)")
    crun = csub.add_parser("run", help="submit a fedcare run to the SuperLink and stream its progress")
    crun.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. num_sites=3 num_rounds=5")
    crun.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory from its last round")
    crun.add_argument("--signing-key", help="Ed25519 key that signs each global adapter (coordinator.key)")
    crun.add_argument("--app-signature", help="the consortium's signature of this checkout's bundle (fedcare.fab.sig)")
    for p in (cenroll, crun):
        p.add_argument("--superlink", default="127.0.0.1:8000", help="SuperLink address host:port")
        p.add_argument("--ca", help="consortium CA certificate (ca.crt)")
        p.add_argument("--insecure", action="store_true", help="connect without TLS: local experiments only")
    site = sub.add_parser("site", help="run a hospital's site daemon (a Flower SuperNode)")
    ssub = site.add_subparsers(dest="action", required=True)
    sstart = ssub.add_parser("start", help="connect this site to the coordinator and serve rounds")
    sstart.add_argument("--config", required=True, help="the site's site.yaml")
    srev = ssub.add_parser("review", help="review an app bundle (FAB) before trusting it in site.yaml")
    srev.add_argument("fab", help="the .fab file the consortium approved (from `fedcare app build`)")
    srev.add_argument("--signature", help="its signature (default: FAB.sig when it exists)")
    srev.add_argument("--config", help="this site's site.yaml: also say whether the site would run the bundle")
    app = sub.add_parser("app", help="the consortium's approved app bundle (FAB) that sites pin")
    asub_app = app.add_subparsers(dest="action", required=True)
    abuild = asub_app.add_parser("build", help="build this checkout's Flower app bundle and print its SHA-256")
    abuild.add_argument("--out", default=".", help="folder for fedcare.fab and fedcare.fab.sha256")
    abuild.add_argument("--sign", metavar="KEY", help="the consortium's app-signing key: also write fedcare.fab.sig")
    abuild.add_argument(
        "--release",
        type=int,
        default=0,
        help="release number signed with the bundle (sites retire older ones with min_app_release)",
    )
    audit = sub.add_parser("audit", help="inspect a site's egress log")
    asub = audit.add_subparsers(dest="action", required=True)
    for name in ("verify", "show"):
        ap = asub.add_parser(name, help=f"{name} an egress log")
        ap.add_argument("log", help="egress.jsonl")
        if name == "verify":
            ap.add_argument(
                "--anchor",
                action="append",
                default=[],
                metavar="SEQ:HASH",
                help="a head hash recorded outside the site; the log must hold it (repeat)",
            )
            ap.add_argument("--adapter", help="a signed global adapter whose manifest recorded this site's head")
            ap.add_argument("--site", help="the site id in that manifest (e.g. site-0)")
    asub.add_parser(
        "canaries", help="memorization audit: canary exposure and membership AUC, DP vs no DP", add_help=False
    )
    from simulations.evaluate import build_parser as evaluate_parser

    evaluate = evaluate_parser(sub.add_parser("evaluate", help="task metrics of the base model and adapters"))
    from simulations.report import build_parser as report_parser

    report_parser(sub.add_parser("report", help="rebuild a run's report.html, or a sweep's privacy-utility curve"))
    from simulations.plan import build_parser as plan_parser

    plan = plan_parser(sub.add_parser("plan", help="DP-SGD batch/steps choices for a site's records and budget"))
    from simulations.compare import build_parser as compare_parser

    compare_parser(sub.add_parser("compare", help="federated DP vs local-only, pooled (DP / no DP) and base, per site"))
    from simulations.compare import DEMO_ARMS

    compare_parser(
        sub.add_parser("demo", help="the default demo: 3 hospitals federated with DP, then each alone, per-site table"),
        arms=DEMO_ARMS,
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:  # options and Hydra overrides in any order
        return _guard(lambda: _evaluate(evaluate.parse_intermixed_args(argv[1:])))
    if argv[:1] == ["plan"]:
        from simulations.plan import main as plan_main

        return _guard(lambda: plan_main(plan.parse_intermixed_args(argv[1:])))
    if argv[:2] == ["audit", "canaries"]:  # its own parser: options and Hydra overrides in any order
        from simulations.canary_audit import main as canary_main

        return _guard(lambda: canary_main(argv[2:]))
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "simulate": _simulate,
        "check-data": _check_data,
        "prepare-model": _prepare_model,
        "generate": _generate,
        "verify": _verify,
        "certs": _certs,
        "fingerprint": _fingerprint,
        "coordinator": _coordinator,
        "site": _site,
        "audit": _audit,
        "app": _app,
        "report": _report,
        "compare": _compare,
        "demo": _compare,
    }
    return _guard(lambda: _dispatch(commands, _parse(parser, argv)))


def _dispatch(commands: dict[str, Callable[[argparse.Namespace], int]], args: argparse.Namespace) -> int:
    return commands[args.command](args)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse with options and positionals (Hydra overrides) in any order.

    argparse's ``parse_intermixed_args`` does not support subparsers, so the leaf command's own parser
    (``generate``, ``coordinator run``, ...) parses everything after the command words.
    """
    node, words = parser, []
    for word in argv:
        choices = _subcommands(node)
        if word not in choices:
            break
        node, words = choices[word], [*words, word]
    if _subcommands(node) or node is parser:
        return parser.parse_args(argv)  # no leaf: argparse names what is missing
    args = node.parse_intermixed_args(argv[len(words) :])
    args.command = words[0]
    if len(words) > 1:
        args.action = words[1]
    return args


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _guard(command: Callable[[], int]) -> int:
    try:
        return command()
    except FedcareError as err:
        print(f"fedcare: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedcare: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        # A bug, not the user's input. Its text may quote a record (tokenizers and parsers do), so only
        # its type is shown; FEDCARE_DEBUG=1 re-raises it for a full traceback.
        if os.environ.get("FEDCARE_DEBUG"):
            raise
        print(
            f"fedcare: error: unexpected {type(err).__name__} (a fedcare bug; FEDCARE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(message: str) -> str:
    text = printable(message)
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 20] + " ... (message cut)"


def _simulate(args: argparse.Namespace) -> int:
    from simulations.run import main as run_main

    return run_main(args.overrides + (["--multirun"] if args.multirun else []))


def _compare(args: argparse.Namespace) -> int:
    from simulations.compare import main as compare_main

    return compare_main(args)


def _report(args: argparse.Namespace) -> int:
    from simulations.report import main as report_main

    return report_main(args)


def _evaluate(args: argparse.Namespace) -> int:
    from simulations.evaluate import main as evaluate_main

    return evaluate_main(args)


def _check_data(args: argparse.Namespace) -> int:
    from common.records import ColumnMapping, load_records

    if bool(args.prompt_column) != bool(args.completion_column):
        given = "--prompt-column" if args.prompt_column else "--completion-column"
        raise UsageError(
            f"check-data: {given} needs its partner: pass both --prompt-column and "
            "--completion-column, or neither to detect the shape"
        )
    columns = ColumnMapping(args.prompt_column, args.completion_column) if args.prompt_column else None
    for path in args.files:
        records = load_records(path, columns)
        print(f"{printable(path)}: {len(records)} records OK")
    return 0


def _prepare_model(args: argparse.Namespace) -> int:
    from common.model import resolve_model
    from server.compose import compose

    cfg, _ = compose(args.overrides)
    print(resolve_model(cfg.model))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from common.adapters import check_adapter_dir
    from common.errors import AdapterLayoutError
    from common.model import resolve_model
    from server.compose import compose

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not 1 <= args.max_new_tokens <= 4096:
        raise UsageError(f"generate: --max-new-tokens must be in [1, 4096], got {args.max_new_tokens}")
    _check_adapter(Path(args.adapter), args.key, args.no_verify)
    check_adapter_dir(Path(args.adapter))  # structure before content: before torch or the model is loaded
    cfg, _ = compose(args.overrides)
    model_cfg = (
        cfg.model
        if any(o.split("=", 1)[0].lstrip("+").startswith("model") for o in args.overrides)
        else _adapter_base_model(Path(args.adapter), cfg.model)
    )
    resolve_model(model_cfg)

    import torch
    from peft import PeftModel

    from common.model import load_model_and_tokenizer

    base, tokenizer = load_model_and_tokenizer(model_cfg)
    try:
        model = PeftModel.from_pretrained(base, args.adapter)
    except Exception as err:  # noqa: BLE001 - PEFT/safetensors raise many types; the class name is what is safe
        raise AdapterLayoutError(
            f"{printable(args.adapter)}: the adapter does not fit the base model "
            f"{model_cfg.name_or_path} ({type(err).__name__})"
        ) from None
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": args.prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return 0


def _adapter_base_model(adapter: Path, default: Any) -> Any:
    """The base model an adapter was trained on: its run's config.json, else PEFT's base_model_name_or_path."""
    import dataclasses
    import json

    run_config = adapter.resolve().parent.parent.parent / "config.json"  # runs/<run>/adapters/round-NNN
    try:
        name = json.loads(run_config.read_text(encoding="utf-8"))["model"]["name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        try:
            name = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError):
            return default
    print(f"base model of {adapter}: {name}", file=sys.stderr)
    return dataclasses.replace(default, name_or_path=str(name))


def _check_adapter(adapter: Path, key: str | None, no_verify: bool) -> None:
    """Adapters are verified before use unless the user opts out explicitly."""
    from common.signing import verify_adapter

    if key:
        verify_adapter(adapter, Path(key))
    elif not no_verify:
        raise FedcareError(
            f"{adapter}: pass --key coordinator.pub to verify the adapter's signature, "
            "or --no-verify for an unsigned adapter"
        )


def _verify(args: argparse.Namespace) -> int:
    from common.signing import describe_facts, verify_adapter

    manifest = verify_adapter(Path(args.adapter), Path(args.key))
    print(f"{args.adapter}: signature OK ({len(manifest['files'])} files)\n{describe_facts(manifest)}")
    return 0


APP_SIGNING = "app-signing"  # the consortium's key that signs approved app bundles (`fedcare app build --sign`)


def _certs(args: argparse.Namespace) -> int:
    from common import credentials

    out = make_private_dir(args.out, "certs --out")  # "" would write private keys into the current folder
    # The consortium's own private keys never sit beside the files that are shipped to the coordinator and sites.
    ca_dir = make_private_dir(args.ca_dir or out.parent / f"{out.resolve().name}-ca", "certs --ca-dir")
    if ca_dir.resolve() == out.resolve():
        raise UsageError("certs: --ca-dir must not be the --out folder (the CA key would ship with the rest)")
    # The SuperLink's own ServerApp process dials 127.0.0.1 and checks the name: keep loopback in the cert.
    hosts = list(dict.fromkeys([*args.host, *credentials.DEFAULT_HOSTS]))
    paths, private = credentials.CredentialPaths(out), credentials.CredentialPaths(ca_dir)
    ca_key = private.ca_key
    if paths.ca_key.exists():  # written there by an older fedcare
        print(f"WARNING: {paths.ca_key} sits beside files shipped to sites: move it to {ca_key}", file=sys.stderr)
        ca_key = ca_key if ca_key.exists() else paths.ca_key
    if not paths.ca_cert.exists():
        credentials.create_ca(out, key_dir=ca_dir)
    print(f"consortium CA:        {paths.ca_cert} (private key {ca_key}: keep it offline, never ship it)")
    if not paths.server_cert.exists():
        credentials.create_server_cert(out, paths.ca_cert, ca_key, hosts=hosts)
    print(f"coordinator TLS cert: {paths.server_cert}" + (f" (hosts: {', '.join(hosts)})" if args.host else ""))
    if not paths.signing_public_key().exists():
        credentials.create_signing_keypair(out)
    pub = paths.signing_public_key()
    print(f"adapter signing key:  {pub} ({credentials.fingerprint(pub)})")
    if not paths.signing_public_key(APP_SIGNING).exists():
        credentials.create_signing_keypair(out, APP_SIGNING, key_dir=ca_dir)
    app_pub = paths.signing_public_key(APP_SIGNING)
    print(
        f"app signing key:      {app_pub} ({credentials.fingerprint(app_pub)}; sites trust it: trusted_signers); "
        f"private key {private.signing_key(APP_SIGNING)}: keep it with the CA key"
    )
    for site_id in args.site:  # existing site keys are kept unless --overwrite (key rotation)
        if args.overwrite or not paths.site_public_key(site_id).exists():
            credentials.create_site_keypair(out, site_id, overwrite=args.overwrite)
        site_pub = paths.site_public_key(site_id)
        print(f"site {site_id}: {site_pub} ({credentials.fingerprint(site_pub)})")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    """Fingerprints to compare out of band: keys as ``ssh-keygen -lf`` prints them (which cannot read the PEM
    Ed25519 keys coordinator.pub / app-signing.pub), certificates as ``openssl x509 -fingerprint -sha256``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from common import credentials
    from common.files import read_regular

    for name in args.files:
        data = read_regular(name, "key or certificate")
        if b"-----BEGIN CERTIFICATE-----" in data:
            try:
                digest = x509.load_pem_x509_certificate(data).fingerprint(hashes.SHA256())
            except ValueError:
                raise FedcareError(f"{printable(name)}: not a PEM certificate") from None
            print(f"{printable(name)}: certificate SHA256 {digest.hex(':').upper()}")
        else:
            print(f"{printable(name)}: key {credentials.fingerprint(Path(name))}")
    return 0


def _coordinator(args: argparse.Namespace) -> int:
    from server import superlink

    if args.action == "start":
        if not args.insecure and not args.certs:
            raise FedcareError("coordinator start: pass --certs DIR (from `fedcare certs`), or --insecure")
        if not 1 <= args.port <= 65535:
            raise UsageError(f"coordinator start: --port must be in [1, 65535], got {args.port}")
        state = Path(args.state_dir)
        make_private_dir(state, "--state-dir")
        opts = superlink.SuperLinkOptions(None if args.insecure else Path(args.certs), state, args.host, args.port)
        cmd = superlink.superlink_command(opts)
        if args.insecure:
            _warn_insecure()
        os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        os.execvp(cmd[0], cmd)
    if not args.insecure and not args.ca:
        raise FedcareError(f"coordinator {args.action}: pass --ca ca.crt (the consortium CA), or --insecure")
    if not args.insecure:
        from common.files import read_regular

        read_regular(args.ca, "CA certificate")
    if args.action == "enroll":
        superlink.enroll_command(Path(args.public_key))  # checks the key before anything is written
        _connect(args)
        return _enroll(args.superlink, Path(args.public_key))
    return _coordinator_run(args)


def _connect(args: argparse.Namespace) -> None:
    from server import superlink

    if args.insecure:
        _warn_insecure()
    superlink.write_connection(args.superlink, None if args.insecure else Path(args.ca))


def _enroll(address: str, public_key: Path, wait_s: float = 60.0) -> int:
    """Register a site's key once the SuperLink listens (it needs a moment after `coordinator start`)."""
    import socket
    import time

    from common import credentials
    from server import superlink

    cmd = superlink.enroll_command(public_key)  # checks the key file first
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise FedcareError(
                    f"enroll: no SuperLink listening at {address} after {wait_s:.0f} s; "
                    f"site {public_key.stem} is NOT enrolled"
                ) from None
            time.sleep(0.5)
    code = _run(cmd)
    if code != 0:
        raise FedcareError(f"enroll: flwr supernode register exited {code}; site {public_key.stem} is NOT enrolled")
    print(
        f"enrolled site {public_key.stem}: key {credentials.fingerprint(public_key)} "
        "(compare with the fingerprint the site gave you; `ssh-keygen -lf` prints the same)"
    )
    return 0


def _coordinator_run(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from datetime import UTC, datetime

    from server import superlink
    from server.compose import compose

    overrides = list(args.overrides)
    keys = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    cfg, _ = compose(overrides)  # a typo or a bad value is reported here, not after the run was submitted
    if args.signing_key:
        from common.files import read_regular

        read_regular(args.signing_key, "signing key")
    if args.resume:
        resume = Path(args.resume).resolve()
        if not (resume / "config.json").is_file():
            raise FedcareError(f"--resume {printable(args.resume)}: not a run directory (no config.json in it)")
        overrides = [o for o in overrides if o.split("=", 1)[0] not in ("output_dir", "run_name")]
        overrides += [f"output_dir={resume.parent}", f"run_name={resume.name}", "coordinator.resume=true"]
        run_dir = resume
    else:
        output = Path(next((o.split("=", 1)[1] for o in overrides if o.startswith("output_dir=")), "runs"))
        name = next((o.split("=", 1)[1] for o in overrides if o.startswith("run_name=")), "")
        name = name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        overrides = [o for o in overrides if o.split("=", 1)[0] not in ("output_dir", "run_name")]
        overrides += [f"output_dir={output.resolve()}", f"run_name={name}"]  # absolute: the ServerApp runs elsewhere
        run_dir = output.resolve() / name
    if args.signing_key and "coordinator.signing_key" not in keys:
        overrides.append(f"coordinator.signing_key={Path(args.signing_key).resolve()}")
    from server.server_app import refuse_unsupported

    refuse_unsupported(overrides)  # fail here, before a run is submitted, as the ServerApp would
    signature = _app_signature(Path(args.app_signature)) if args.app_signature else ""
    _connect(args)
    with tempfile.TemporaryDirectory() as tmp:
        code = _run(superlink.run_command(overrides, Path(tmp) / "run_config.toml", signature))
    summary = run_dir / "summary.json"
    if code != 0 or not summary.exists():
        raise FedcareError(
            f"the run did not finish (flwr run exit {code}); {run_dir} holds what was saved; "
            f"continue it with --resume {run_dir}"
        )
    data = json.loads(summary.read_text())
    from simulations.run import sites_never_trained

    missing = sites_never_trained(data, cfg.num_sites)
    losses = " -> ".join(f"{x:.3f}" for x in data["eval_loss_by_round"] if x is not None)
    from common.report import write_report
    from simulations.report import released_task_line

    tasks = f"{released_task_line(data['task_metrics'])}\n" if data.get("task_metrics") else ""
    print(
        f"held-out loss by round: {losses}\n{tasks}global adapter: {data['adapter_dir']}\nsummary: {summary}\n"
        f"report: {write_report(run_dir)}"
    )
    if missing:
        raise FedcareError(
            f"{', '.join(missing)} did not train in any round (see the coordinator's log); "
            "the global adapter was trained without them"
        )
    return 0


def _build_app() -> bytes:
    from flwr.cli.build import build_fab_from_disk

    from server.superlink import APP_DIR

    return build_fab_from_disk(APP_DIR)  # byte for byte what `flwr run` (fedcare coordinator run) submits


def _app_signature(path: Path) -> str:
    """The signature line to send with a run; it must be genuine and sign the bundle this checkout builds."""
    import hashlib

    from common.files import read_regular
    from common.signing import read_app_signature

    text = read_regular(path, "app signature").decode("utf-8", "replace").strip()
    signed, signer, _, release = read_app_signature(text)
    digest = hashlib.sha256(_build_app()).hexdigest()
    if signed != digest:
        raise FedcareError(
            f"--app-signature {printable(path)}: it signs sha256 {signed}, but this checkout builds {digest}; "
            "sites would refuse the run (build and sign this checkout with `fedcare app build --sign`)"
        )
    print(f"app bundle sha256 {digest[:16]}... release {release} signed by {signer}", file=sys.stderr)
    return text


def _app(args: argparse.Namespace) -> int:
    import hashlib

    from server.superlink import APP_DIR

    fab = _build_app()
    digest = hashlib.sha256(fab).hexdigest()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fedcare.fab").write_bytes(fab)
    (out / "fedcare.fab.sha256").write_text(f"{digest}  fedcare.fab\n", encoding="utf-8")
    print(f"app bundle: {out / 'fedcare.fab'} ({len(fab)} bytes) from {APP_DIR}\nsha256: {digest}")
    if args.release and not args.sign:
        raise FedcareError("--release: a release number is signed with the bundle; pass --sign KEY too")
    if args.sign:
        from common.signing import APP_SIGNATURE_SUFFIX, read_app_signature, sign_app

        signature = sign_app(fab, Path(args.sign), release=args.release)
        sig_path = out / f"fedcare.fab{APP_SIGNATURE_SUFFIX}"
        sig_path.write_text(signature + "\n", encoding="utf-8")
        print(
            f"signature: {sig_path} (release {args.release}, signer {read_app_signature(signature).signer})\n"
            f"submit runs with:  fedcare coordinator run ... --app-signature {sig_path}\n"
            "sites that trust the signer add to site.yaml:  trusted_signers: [<the signer's .pub file>]"
        )
    print(f"sites that approve this one bundle add to site.yaml:  trusted_apps: [{digest}]")
    return 0


def _review(fab_path: Path, signature_path: str | None, config: str | None) -> int:
    import hashlib
    import zipfile

    from common.files import read_regular
    from common.signing import (
        APP_SIGNATURE_SUFFIX,
        SignatureError,
        check_app,
        load_trusted_signers,
        read_app_signature,
    )

    data = read_regular(fab_path, "app bundle", max_bytes=1 << 30)
    digest = hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(fab_path) as fab:
        names = [(i.filename, i.file_size) for i in fab.infolist()]
    print(f"{fab_path}: {len(names)} files, sha256 {digest}")
    for name, size in names:
        print(f"  {size:>9}  {name}")
    sig_file = Path(signature_path) if signature_path else Path(f"{fab_path}{APP_SIGNATURE_SUFFIX}")
    signature = ""
    if signature_path or sig_file.exists():
        signature = read_regular(sig_file, "app signature").decode("utf-8", "replace").strip()
        try:
            signed, signer, _, release = read_app_signature(signature)
        except SignatureError as err:
            raise FedcareError(f"{printable(sig_file)}: {err}") from None
        if signed != digest:
            raise FedcareError(
                f"{printable(sig_file)}: signed by {signer} for sha256 {signed}, not for this bundle ({digest}): "
                "the bundle was changed after signing"
            )
        print(
            f"signature: {sig_file}: valid, release {release}, signed by {signer} "
            "(compare with the consortium's published key)"
        )
    else:
        print("signature: none (approve it by hash, or ask the consortium for fedcare.fab.sig)")
    if config:
        from common.site import load_site_config

        cfg = load_site_config(config)
        verdict = check_app(
            data,
            site_id=cfg.site_id,
            trusted_apps=cfg.trusted_apps,
            trusted_signers=load_trusted_signers(cfg.trusted_signers),
            signature=signature,
            revoked_apps=cfg.revoked_apps,
            min_release=cfg.min_app_release,
        )
        print(f"site {cfg.site_id} would run it: {verdict}")
        return 0
    print(
        "Compare the hash and signer with the ones the consortium published, read the files that run at your site "
        f"(client/, common/), then add to site.yaml:  trusted_apps: [{digest}]  or  trusted_signers: [<signer .pub>]"
    )
    return 0


def _site(args: argparse.Namespace) -> int:
    from client.supernode import run_daemon, superexec_command, supernode_command
    from common.console import configure_logging
    from common.site import load_site_config

    if args.action == "review":
        return _review(Path(args.fab), args.signature, args.config)
    path = Path(args.config)
    cfg = load_site_config(path)
    from common.records import ColumnMapping, load_records

    make_private_dir(Path(cfg.state_dir), "site.state_dir")

    columns = ColumnMapping(cfg.data.prompt_column, cfg.data.completion_column) if cfg.data.prompt_column else None
    records = load_records(cfg.data.paths[0], columns)  # fail before connecting when the data is unusable
    print(f"site {cfg.site_id}: {len(records)} records in {cfg.data.paths[0]}; state in {cfg.state_dir}")
    cmd = supernode_command(cfg, path)
    if cfg.insecure:
        _warn_insecure()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    configure_logging()
    if cfg.pins_apps:
        from common.signing import load_trusted_signers

        signers = ", ".join(load_trusted_signers(cfg.trusted_signers)) or "nobody"
        pinned = ", ".join(h[:16] for h in cfg.trusted_apps) or "none"
        print(f"site {cfg.site_id}: runs only approved app bundles: pinned {pinned}; signed by {signers}")
        return run_daemon(cmd, helper=superexec_command(cfg, path))
    print(
        f"site {cfg.site_id}: WARNING: trusted_apps and trusted_signers are empty, so this site runs whatever app "
        "bundle the coordinator sends; pin the approved one (fedcare app build / fedcare site review)",
        file=sys.stderr,
    )
    return run_daemon(cmd)


def _audit(args: argparse.Namespace) -> int:
    from common.audit import summarize, verify_log

    if args.action == "verify":
        anchors = [_anchor(a) for a in args.anchor]
        if args.adapter:
            anchors.append(_manifest_anchor(Path(args.adapter), args.site))
        count = verify_log(args.log, anchors)
        held = f"; holds {len(anchors)} anchored head(s)" if anchors else ""
        print(f"{args.log}: chain OK ({count} entries){held}")
    else:
        print(summarize(args.log))
    return 0


def _anchor(text: str) -> tuple[int, str]:
    seq, _, head = text.partition(":")
    if not seq.isdigit() or len(head) != 64:
        raise FedcareError(f"--anchor {text!r}: expected SEQ:HASH (a number and a 64-hex head hash)")
    return int(seq), head


def _manifest_anchor(adapter: Path, site: str | None) -> tuple[int, str]:
    import json

    from common.signing import MANIFEST

    try:
        facts = json.loads((adapter / MANIFEST).read_text(encoding="utf-8")).get("facts") or {}
    except (OSError, ValueError) as err:
        raise FedcareError(f"{adapter / MANIFEST}: cannot read ({type(err).__name__})") from None
    entry = (facts.get("sites") or {}).get(site or "")
    if not entry or not entry.get("egress_head"):
        raise FedcareError(f"{adapter / MANIFEST}: no egress head recorded for site {site!r} (pass --site)")
    return int(entry["egress_seq"]), str(entry["egress_head"])


def _run(cmd: list[str]) -> int:
    import subprocess

    env = os.environ | {"FLWR_TELEMETRY_ENABLED": os.environ.get("FLWR_TELEMETRY_ENABLED", "0")}
    return subprocess.run(cmd, env=env, check=False).returncode


def _warn_insecure() -> None:
    bar = "!" * 78
    print(
        f"{bar}\n!! INSECURE: no TLS and no site authentication. Anyone on the network can join or\n"
        f"!! read the traffic. For local experiments only; never with patient data.\n{bar}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    raise SystemExit(main())
