"""The library's one fetch path (frugalvl.urlfetch): redirects only to http(s), every address and
redirect shown to the context's address policy, which follows the fetch threads of a tile service."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frugalvl.errors import UserError
from frugalvl.urlfetch import address_policy, public_only, urlopen
from tests.sources.test_xyz import tiles  # noqa: F401 (the tile server fixture)


@contextlib.contextmanager
def redirecting(target: str):
    """A server on 127.0.0.1 answering /go with a 302 to ``target`` and /ok with 200 'ok'."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/go":
                self.send_response(302)
                self.send_header("Location", target.replace("SELF", f"http://127.0.0.1:{port}"))
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_followed_to_http_only():
    with redirecting("SELF/ok") as base, urlopen(f"{base}/go", timeout=5) as answer:
        assert answer.read() == b"ok"
    for target in ("ftp://127.0.0.1/x", "file:///etc/passwd"):
        with redirecting(target) as base, pytest.raises(UserError, match="not an http\\(s\\) address"):
            urlopen(f"{base}/go", timeout=5)
    with pytest.raises(UserError, match="not an http\\(s\\) address"):
        urlopen("file:///etc/passwd", timeout=5)


def test_the_policy_sees_the_address_and_every_redirect():
    seen: list[str] = []
    with redirecting("SELF/ok") as base, address_policy(seen.append), urlopen(f"{base}/go", timeout=5):
        pass
    assert seen == [f"{base}/go", f"{base}/ok"]
    # outside the block no policy applies
    with redirecting("SELF/ok") as base, urlopen(f"{base}/go", timeout=5):
        pass
    assert len(seen) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://[fe80::1]/x",
        "http://[::ffff:169.254.169.254]/x",  # the same, IPv4-mapped
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
    ],
)
def test_link_local_and_reserved_addresses_are_never_read(url):
    for allow_private in (False, True):
        with pytest.raises(UserError, match="never read"):
            public_only(allow_private)(url)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "http://localhost/x", "http://10.1.2.3/x", "http://[::1]/x", "http://192.168.0.7/x"],
)
def test_loopback_and_private_addresses_only_when_allowed(url):
    with pytest.raises(UserError, match="this machine or its local network"):
        public_only(False)(url)
    public_only(True)(url)  # allowed: no error


def test_public_addresses_pass_and_unresolvable_names_are_left_to_the_fetch():
    public_only(False)("https://93.184.215.14/x")  # a public literal
    public_only(False)("https://no-such-host.invalid/x")  # resolves to nothing: the fetch will fail itself


def test_the_policy_follows_the_tile_fetch_threads(tmp_path, tiles):  # noqa: F811 (the fixture)
    """Tiles are fetched by a thread pool: each fetch must still see the caller's policy."""
    from frugalvl.sources.xyz import XYZDataset

    url, _ = tiles
    seen: list[str] = []
    lock = threading.Lock()

    def record(address: str) -> None:
        with lock:
            seen.append(address)

    dataset = XYZDataset(url, 3, tmp_path / "cache", max_requests=4)
    with address_policy(record):
        dataset.tiles([(0, 0), (1, 0), (0, 1), (1, 1)])
    assert dataset.requests == 4 and len(seen) == 4
    with address_policy(public_only(False)), pytest.raises(UserError, match="local network"):
        XYZDataset(url, 3, tmp_path / "cache2").tiles([(0, 0)])
