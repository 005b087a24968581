"""``python -m server.ray --config deploy/ray/serve.yaml``: serve the store on Ray Serve until Ctrl-C or SIGTERM.

Without ``--address`` it starts a local Ray on this machine (``--cpus`` CPUs, no dashboard) and shuts it down on
exit; the Serve proxy listens on the YAML's ``http_options`` (127.0.0.1:8000 unless ``--port`` says otherwise).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import serve
from ray._private import ray_constants
from ray.serve.schema import ServeDeploySchema

from common.compute import available_cores
from server.ray import DEPLOYMENT, application, settings_from_args
from server.registry import read_store


def build_parser() -> argparse.ArgumentParser:
    """The command line; every override applies to each application of the config."""
    parser = argparse.ArgumentParser(prog="python -m server.ray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Example (a laptop): python -m server.ray --config deploy/ray/serve.yaml "
                                            "--replicas 2 --num-cpus 1 --num-gpus 0 --store model_store")
    parser.add_argument("--config", type=Path, required=True, help="Serve config file (deploy/ray/serve.yaml)")
    parser.add_argument("--address", help="join this running Ray cluster (default: start a local one)")
    parser.add_argument("--cpus", type=int, default=available_cores(),
                        help="CPUs of the local Ray (default: this process's available cores)")
    parser.add_argument("--replicas", type=int, help="fixed number of replicas (replaces autoscaling_config)")
    parser.add_argument("--num-gpus", type=float, help="GPUs per replica (0 on a machine without one)")
    parser.add_argument("--num-cpus", type=float, help="CPUs per replica")
    parser.add_argument("--port", type=int, help="HTTP port of the Serve proxy")
    parser.add_argument("--host", help="HTTP interface of the Serve proxy (keep 127.0.0.1 unless behind a proxy)")
    parser.add_argument("--store", type=Path, help="model store (the args' store)")
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                        help="set one application arg (a server setting, e.g. max_batch=16); repeatable")
    return parser


def apply_overrides(config: dict[str, Any], args: argparse.Namespace) -> ServeDeploySchema:
    """The config file with the command line's overrides, validated as Ray Serve would."""
    http = config.setdefault("http_options", {})
    http.update({k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None})
    extra = dict(item.split("=", 1) for item in args.arg if "=" in item)
    if len(extra) != len(args.arg):
        raise ValueError(f"--arg takes KEY=VALUE, got {', '.join(a for a in args.arg if '=' not in a)}")
    for app in config.get("applications", []):
        app_args = app.setdefault("args", {})
        app_args.update(extra)
        if args.store is not None:
            app_args["store"] = str(args.store)
        for deployment in app.setdefault("deployments", [{"name": DEPLOYMENT}]):
            if args.replicas is not None:
                deployment.pop("autoscaling_config", None)
                deployment["num_replicas"] = args.replicas
            actor = deployment.setdefault("ray_actor_options", {})
            actor.update({k: v for k, v in (("num_gpus", args.num_gpus), ("num_cpus", args.num_cpus)) if v is not None})
    return ServeDeploySchema.model_validate(config)


def check_fits(options: dict[str, Any], cpus: int) -> None:
    """ValueError when the fewest replicas the deployment asks for cannot fit the local Ray (it would wait forever)."""
    replicas = options.get("num_replicas", (options.get("autoscaling_config") or {}).get("min_replicas", 1))
    actor = options.get("ray_actor_options") or {}
    need, gpus = (replicas if isinstance(replicas, int) else 1) * actor.get("num_cpus", 1), actor.get("num_gpus", 0)
    if need > cpus:
        raise ValueError(f"{replicas} replicas of {actor.get('num_cpus', 1)} CPUs need {need:g} CPUs; the local Ray "
                         f"has {cpus} (--cpus): pass --num-cpus or --replicas")
    if gpus and not ray_gpus():
        raise ValueError(f"each replica asks for {gpus:g} GPUs and this machine has none: pass --num-gpus 0")


def ray_gpus() -> int:
    """GPUs a local Ray would see (CUDA_VISIBLE_DEVICES, else nvidia-smi's list)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi") is None:
        return 0
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return result.stdout.count("GPU ") if result.returncode == 0 else 0


def loopback_only() -> None:
    """Make a local Ray advertise and bind 127.0.0.1 instead of the machine's address (Ray's switch for laptops)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read at import by Ray's own processes
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process imported Ray before main() ran


def main(argv: Sequence[str] | None = None) -> int:
    """Deploy every application of the config, then wait for Ctrl-C or SIGTERM and shut Serve (and Ray) down."""
    args = build_parser().parse_args(argv)
    try:
        config = apply_overrides(yaml.safe_load(args.config.read_text()), args)
        apps = []
        for app in config.applications:
            if app.import_path != "server.ray:build_app":
                raise ValueError(f"application {app.name!r}: import_path must be server.ray:build_app "
                                 "(use `serve run` for other applications)")
            if args.address is None:
                read_store(settings_from_args(app.args or {}))  # the local store exists and names these models
            options = [d.model_dump(exclude_unset=True, exclude={"name"}) for d in app.deployments
                       if d.name == DEPLOYMENT]
            if args.address is None and options:
                check_fits(options[0], args.cpus)
            apps.append((app, application(app.args or {}, options[0] if options else None)))
    except (ValueError, OSError) as exc:  # pydantic's ValidationError and ManifestError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.address is None:
        loopback_only()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, namespace="serve")
    else:
        ray.init(address=args.address, namespace="serve")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs a SIGTERM handler of its own
        signal.signal(signum, lambda *_: stop.set())
    try:
        http = config.http_options.model_dump(exclude_unset=True)
        serve.start(http_options=http, proxy_location=config.proxy_location)
        for app, target in apps:
            serve.run(target, name=app.name, route_prefix=app.route_prefix)
        host, port = config.http_options.host, config.http_options.port
        print(f"serving {', '.join(app.name for app, _ in apps)} on http://{host}:{port} (Ctrl-C stops)", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
