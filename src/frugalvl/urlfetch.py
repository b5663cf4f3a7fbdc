"""Reading http(s) addresses: one opener for every fetch of the library, and where it may go.

Every fetch that frugalvl makes itself (STAC items, tile-service tiles and capabilities, the first
bytes of a remote COG for its identity) goes through :func:`urlopen`, which differs from urllib's in
two ways:

* a redirect is followed only to another ``http``/``https`` address (urllib also follows ``ftp``);
* the first address and every redirect target are shown to the **address policy** of the calling
  context, if one is set (:func:`address_policy`). The command line sets none: the user reads what
  they name. The web app sets one (docs/app.md, "Remote sources"), so that a page can never make the
  server read the cloud's metadata service or, when the app listens beyond this machine, the
  machine's own or its local network's services.

The policy is a context variable, so it follows the request that set it, including into the fetch
threads a :class:`frugalvl.sources.tiles.TileDataset` starts (they run in a copy of the context).
Reads by GDAL (a COG's pixels through ``/vsicurl``) cannot be routed through this opener: their first
address is checked (the app checks every asset link), their redirects are GDAL's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import UserError

Policy = Callable[[str], None]  # raises UserError for an address that may not be read

_POLICY: contextvars.ContextVar[Policy | None] = contextvars.ContextVar("frugalvl_address_policy", default=None)


@contextlib.contextmanager
def address_policy(policy: Policy | None) -> Iterator[None]:
    """Check every address fetched inside the block with ``policy`` (None: no check)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def check_address(url: str) -> None:
    """Apply the current context's address policy to ``url`` (nothing when none is set)."""
    policy = _POLICY.get()
    if policy is not None:
        policy(url)


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects only to http(s), each target shown to the address policy before it is followed."""

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001 (urllib's signature)
        newurl = urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise UserError(f"{req.full_url[:120]} redirects to {newurl[:120]}, which is not an http(s) address")
        check_address(newurl)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = urllib.request.build_opener(_HttpRedirects())


def urlopen(url: str | urllib.request.Request, timeout: float) -> Any:
    """urllib's ``urlopen`` for http(s) only, under the current address policy (see the module's docstring)."""
    full = url.full_url if isinstance(url, urllib.request.Request) else url
    if urlsplit(full).scheme.lower() not in ("http", "https"):
        raise UserError(f"{full[:120]} is not an http(s) address")
    check_address(full)
    return _OPENER.open(url, timeout=timeout)


def host_addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The IP addresses ``host`` resolves to (an IP literal is itself); [] when it does not resolve."""
    host = host.strip("[]")
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []
    found = []
    for info in infos:
        with contextlib.suppress(ValueError):
            found.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
    return found


def public_only(allow_private: bool) -> Policy:
    """A policy refusing addresses that resolve to link-local (the cloud metadata service), multicast,
    unspecified or reserved IPs, and, unless ``allow_private``, to loopback or private ones."""

    def check(url: str) -> None:
        host = urlsplit(url).hostname or ""
        for ip in host_addresses(host):
            mapped = getattr(ip, "ipv4_mapped", None) or ip
            # in this order: 169.254/16 counts as private and ::1 as reserved in Python's tables
            never = mapped.is_link_local or mapped.is_multicast or mapped.is_unspecified
            if not never and (mapped.is_loopback or mapped.is_private):
                if allow_private:
                    continue
                raise UserError(
                    f"{host[:80]} is an address of this machine or its local network: the app reads such "
                    "addresses only when its private_sources setting is on"
                )
            if never or mapped.is_reserved:
                raise UserError(f"{host[:80]} is a link-local, multicast or reserved address: it is never read")

    return check


__all__ = ["Policy", "address_policy", "check_address", "host_addresses", "public_only", "urlopen"]
