"""``frugalvl app``: serve the local web application (frugalvl.app; docs/app.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="a local web app: type classes, see the map segmented, download results",
        description="Serve a local web page to try vocabularies on an image or GeoTIFF, "
        "with SegEarth-OV or SegEarth-OV3, and download the results.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose images the page may open by path (repeatable; default: none, uploads only)",
    )
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest accepted upload in MB (default 512)")
    add_model_defaults(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument(
        "--tile", type=int, default=1024, help="areas larger than this are segmented in tiles (default 1024)"
    )
    p.add_argument(
        "--session-ttl", type=float, default=120.0, help="minutes before an idle session's files are deleted"
    )
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
    if args.max_upload_mb <= 0:
        raise UserError("--max-upload-mb must be positive")
    if args.tile < 64:
        raise UserError("--tile must be at least 64 pixels")
    return AppConfig(
        data_roots=tuple(roots),
        max_upload_mb=args.max_upload_mb,
        models={name: getattr(args, name) for name in model_options()},
        device=args.device,
        tile=args.tile,
        session_ttl_s=args.session_ttl * 60,
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..app import create_app
    except ImportError as exc:
        raise UserError(f"the app needs {exc.name}: pip install 'frugalvl[app]'") from None
    from ..devices import resolve_device

    resolve_device(args.device)  # a bad --device fails now, not at the first run
    config = config_from_args(args)
    if args.host not in LOCAL_HOSTS:
        print(
            f"frugalvl: warning: serving on {args.host}: anyone who can reach this address can use the app and "
            "the models; keep the default 127.0.0.1 unless you trust the network",
            file=sys.stderr,
        )
    app = create_app(config)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"frugalvl app: open http://{shown}:{args.port}/ (Ctrl+C to stop)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.close()
    return 0
