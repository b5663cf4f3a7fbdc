"""The app's settings: what the command line fixes for the whole server (docs/app.md)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import FieldError, check_at_least, option


def parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not a TCP port: give 0 to 65535")
    return port


def parse_hosts(text: str) -> tuple[str, ...]:
    """Host names separated by commas, lower-cased, without ports."""
    hosts = tuple(h.strip().lower() for h in text.split(",") if h.strip())
    for h in hosts:
        if not all(c.isalnum() or c in "-._:[]" for c in h):
            raise ValueError(f"{h!r} is not a host name")
    return hosts


def minutes(text: str) -> float:
    """A duration given in minutes, as seconds."""
    return float(text) * 60


@dataclass(frozen=True)
class AppConfig:
    """Server-wide settings; the page may choose models, but server paths must lie under ``data_roots``
    and local model files under ``model_root``."""

    data_roots: tuple[Path, ...] = ()  # folders whose files the page may open by path
    max_upload_mb: float = option(512.0, "largest accepted upload in MB")
    models: Mapping[str, str | None] = field(default_factory=dict)  # default model specs by option name
    device: str = option("cpu", "cpu, cuda, cuda:N or auto")
    session_ttl_s: float = option(
        2 * 3600.0,
        "minutes before an idle session's files are deleted",
        flag="--session-ttl",
        parse=minutes,
        metavar="MINUTES",
        shown="120",
    )
    max_pixels: int = 64_000_000  # largest image the app opens (bigger: `frugalvl segment --tile`)
    max_run_pixels: int = 16_000_000  # largest area one run segments (the visible area helps)
    tile: int = option(1024, "areas larger than this are segmented in tiles (overlap tile/4)")
    workdir: Path | None = None  # where sessions keep files (default: a fresh temp folder)
    samples: tuple[Path, ...] = field(default_factory=tuple)  # extra bundled samples (tests)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)", metavar="ADDRESS")
    port: int = option(8765, "port", parse=parse_port)
    model_root: Path | None = option(
        None,
        "a folder whose model files (CLIP checkpoints, upsamplers, SAM 3 folders) the page may name; "
        "other model names the page gives must be hub ids",
        parse=Path,
        metavar="DIR",
    )
    allowed_hosts: tuple[str, ...] = option(
        (),
        "host names the page may be reached by besides the bound address, e.g. a proxy's (comma-separated)",
        flag="--allowed-host",
        parse=parse_hosts,
        metavar="HOST[,HOST]",
        shown="none",
    )
    private_sources: bool = option(
        False,
        "let remote sources (STAC items, tile services) be read from loopback or private-network addresses "
        "when the app listens beyond this machine (bound to 127.0.0.1 they always may; link-local never)",
    )
    max_sessions: int = option(32, "most browser sessions kept at once (more: answered 429)")
    max_images: int = option(8, "most images one session keeps (the oldest is closed first)")
    max_session_mb: float = option(2048.0, "most memory one session's images and results hold, in MB")

    basemap: str | None = option(
        None,
        "an XYZ tile address shown under georeferenced images, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png "
        "(the page then fetches tiles from that server: it needs a network; default: none)",
        metavar="URL",
    )

    def __post_init__(self) -> None:
        check_at_least(self, ("max_sessions", "max_images"), 1)
        check_at_least(self, ("max_session_mb", "max_upload_mb", "session_ttl_s"), 1e-3)
        check_at_least(self, ("tile",), 64)
        if not 0 <= self.port <= 65535:
            raise FieldError("port", f"{self.port} is not a TCP port: give 0 to 65535", type(self))
        if self.model_root is not None and not Path(self.model_root).is_dir():
            raise FieldError("model_root", f"{self.model_root} is not a folder: give an existing folder", type(self))

    def model_spec(self, name: str) -> str | None:
        """The server's default for model option ``name`` (``clip``, ``upsampler``, ``sam3``): the
        operator's, else the method registry's."""
        if name in self.models:
            return self.models[name]
        from ..segment.methods import model_options

        return model_options()[name].default

    def address_policy(self):  # -> frugalvl.urlfetch.Policy
        """What remote addresses this app may read (docs/app.md, "Remote sources"): never link-local or
        reserved ones; loopback and private ones when it listens on this machine only, or when
        ``private_sources`` is on."""
        from ..urlfetch import public_only

        bound = self.host.strip().lower().strip("[]")
        local = bound == "localhost" or (_is_ip(bound) and _is_loopback(bound))
        return public_only(allow_private=local or self.private_sources)

    @property
    def model_roots(self) -> tuple[Path, ...]:
        return () if self.model_root is None else (Path(self.model_root).resolve(),)

    def host_allowed(self, host: str) -> bool:
        """Whether a request's ``Host`` (without its port) names this server: the bound address, a
        loopback name when bound to one or to every address, an IP address when bound to every
        address, or one of ``allowed_hosts``. A DNS name an attacker controls is none of these."""
        host = host.strip().lower().rstrip(".")
        bound = self.host.strip().lower().strip("[]")
        if host.strip("[]") == bound or host in self.allowed_hosts:
            return True
        loopback = bound in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::") or _is_loopback(bound)
        if loopback and (host == "localhost" or _is_loopback(host.strip("[]"))):
            return True
        return bound in ("0.0.0.0", "::") and _is_ip(host.strip("[]"))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(text: str) -> bool:
    return _is_ip(text) and ipaddress.ip_address(text).is_loopback
