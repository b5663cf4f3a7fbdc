"""``frugalvl app``: serve the local web application (frugalvl.app; docs/app.md)."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from ..errors import UserError
from ._settings import add_settings_options, build_settings, given

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="a local web app: type classes, see the map segmented, download results",
        description="Serve a local web page to try vocabularies on an image or GeoTIFF, "
        "with SegEarth-OV or SegEarth-OV3, and download the results.",
    )
    from ..app.config import AppConfig

    server = p.add_argument_group("server and security (docs/app.md, 'Security')")
    add_settings_options(server, AppConfig)
    p.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose images the page may open by path (repeatable; default: none, uploads only)",
    )
    add_model_defaults(p)
    p.set_defaults(func=run)


def add_model_defaults(parser: argparse.ArgumentParser) -> None:
    """One option per model of the registered methods: the page's default (the page may choose another)."""
    from ..segment.methods import METHODS

    for entry in METHODS.values():
        for m in entry.models:
            parser.add_argument(
                f"--{m.name}",
                default=m.default,
                metavar=m.metavar,
                help=f"the page's default for {entry.name} (as frugalvl segment --{m.name}): {m.help_text}",
            )


def config_from_args(args: argparse.Namespace):
    from ..app import AppConfig
    from ..segment.methods import model_options

    roots = []
    for d in args.data_root:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"--data-root {d} is not a folder: give an existing folder")
        roots.append(path)
    return build_settings(
        AppConfig,
        {
            **given(args, AppConfig),
            "data_roots": tuple(roots),
            "models": {name: absolute_model_spec(getattr(args, name)) for name in model_options()},
        },
    )


def absolute_model_spec(spec: str | None) -> str | None:
    """A model spec naming a local file or folder with its path made absolute (the server runs in an
    empty working folder of its own); hub names unchanged."""
    from ..app.safety import model_spec_path

    if spec is None:
        return None
    local = model_spec_path(spec)
    if local is not None:
        prefix, path = local
        return prefix + str(Path(path).expanduser().resolve())
    return str(Path(spec).resolve()) if os.path.exists(spec) else spec


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..app import create_app
    except ImportError as exc:
        raise UserError(f"the app needs {exc.name}: pip install 'frugalvl[app]'") from None
    from ..devices import resolve_device

    config = config_from_args(args)
    resolve_device(config.device)  # a bad --device fails now, not at the first run
    if config.host not in LOCAL_HOSTS:
        print(
            f"frugalvl: warning: serving on {config.host}: anyone who can reach this address can use the app and "
            "the models; keep the default 127.0.0.1 unless you trust the network",
            file=sys.stderr,
        )
    check_bind(config.host, config.port)
    app = create_app(config)
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    print(f"frugalvl app: open http://{shown}:{config.port}/ (Ctrl+C to stop)")
    # the page's hub model names are never read as files of the folder the server was started in
    cwd = tempfile.mkdtemp(prefix="frugalvl-app-cwd-")
    os.chdir(cwd)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    finally:
        app.state.close()
        shutil.rmtree(cwd, ignore_errors=True)
    return 0


def check_bind(host: str, port: int) -> None:
    """Fail with one line when ``host:port`` cannot be served (unknown address, port taken or reserved)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise UserError(f"--host {host}: not an address of this machine ({exc}): give e.g. 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(
                f"cannot serve on {host}:{port} ({exc.strerror or exc}): choose another --port or --host"
            ) from None
