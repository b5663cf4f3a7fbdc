"""The app as an attacker and a careless user would use it (docs/app.md, "Security"): files opened by
content, model names confined to the model-root folder, Host and Origin, resource caps, and inputs
that must be refused at the edge instead of failing inside."""

from __future__ import annotations

import io
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from .conftest import ORIGIN

VOCAB = "background;water,river,lake;forest,tree"


def vrt(source: str, relative: bool = False, size: int = 16) -> str:
    """A one-band VRT of ``size``² pixels naming ``source``."""
    return (
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><VRTRasterBand dataType="Byte" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )


@pytest.fixture
def secret(tmp_path):
    """A GeoTIFF outside every root, with a pixel pattern an attacker would want back."""
    import rasterio

    path = tmp_path / "outside" / "secret.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 16, 16), 201, np.uint8))
    return path


def upload(client, name: str, data: bytes):
    return client.post("/api/images/upload", files={"file": (name, io.BytesIO(data), "application/octet-stream")})


def errors_of(response) -> str:
    return response.json()["error"]


# --- 1. GDAL opens by content, not by name ----------------------------------------------------------


def test_an_upload_is_opened_by_its_content_and_never_as_a_vrt(make_client, secret, small_png, small_geotiff):
    client = make_client()
    text = vrt(str(secret)).encode()
    for name in ["x.tif", "x.tiff", "x.png", "x.jpg", "x.jp2", "x.vrt"]:
        response = upload(client, name, text)
        assert response.status_code == 400, name
        assert "VRT" in errors_of(response), (name, errors_of(response))
    for name, data in [
        ("x.tif", b"<?xml version='1.0'?>\n  " + vrt("/vsicurl/http://127.0.0.1:9/x.tif").encode()),
        ("x.tif", small_png.read_bytes()),  # a PNG called .tif
        ("x.png", small_geotiff.read_bytes()),  # a TIFF called .png
        ("x.tif", b"II*\0" + b"\0" * 64),  # TIFF magic, no TIFF
    ]:
        response = upload(client, name, data)
        assert response.status_code == 400, (name, data[:20])
    assert client.app.state.sessions.get(client.cookies.get("frugalvl_session")).images == {}
    assert upload(client, "ok.tif", small_geotiff.read_bytes()).status_code == 200


def test_a_data_root_vrt_must_name_only_files_inside_the_roots(make_client, secret, small_geotiff):
    client = make_client()
    root = make_client.root
    shutil.copy(small_geotiff, root / "scene.tif")
    (root / "sub").mkdir()
    (root / "good.vrt").write_text(vrt("scene.tif", relative=True))
    (root / "sub" / "nested.vrt").write_text(vrt("../good.vrt", relative=True))
    (root / "sub" / "up.vrt").write_text(vrt("../../outside/secret.tif", relative=True))
    (root / "abs.vrt").write_text(vrt(str(secret)))
    (root / "curl.vrt").write_text(vrt("/vsicurl/http://127.0.0.1:9/x.tif"))
    (root / "zip.vrt").write_text(vrt("/vsizip/scene.zip/x.tif", relative=True))
    (root / "cwd.vrt").write_text(vrt("scene.tif"))  # relative to the server's working folder
    (root / "evil.vrt").write_text(vrt(str(root / "abs.vrt")))  # a VRT inside the root naming one outside
    (root / "link.tif").symlink_to(secret)
    (root / "linked.vrt").write_text(vrt("link.tif", relative=True))
    (root / "self.vrt").write_text(vrt("self.vrt", relative=True))
    (root / "text.vrt").write_text(vrt("notes.tif", relative=True))
    (root / "notes.tif").write_text("not an image")
    (root / "masked.tif").write_text(vrt(str(secret)))  # a VRT under a TIFF's name
    (root / "python.vrt").write_text(
        vrt("scene.tif", relative=True).replace(
            "<SimpleSource>", "<PixelFunctionLanguage>Python</PixelFunctionLanguage><SimpleSource>"
        )
    )
    (root / "entity.vrt").write_text('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + vrt("&e;"))
    # GDAL reads tag and attribute names in any case and without their namespace
    (root / "case.vrt").write_text(vrt(str(secret)).replace("SourceFilename", "sourceFILENAME"))
    (root / "ns.vrt").write_text(vrt(str(secret)).replace("<VRTDataset ", '<VRTDataset xmlns="urn:x" '))
    (root / "prefix.vrt").write_text(vrt(str(secret)).replace("SourceFilename", "g:SourceFilename"))
    (root / "subclass.vrt").write_text(
        vrt("scene.tif", relative=True).replace("<VRTDataset ", '<VRTDataset SUBCLASS="VRTWarpedDataset" ')
    )
    (root / "comment.vrt").write_text(vrt("scene.tif<!-- x -->", relative=True))
    (root / "spaced.vrt").write_text(vrt(" scene.tif", relative=True))
    (root / "escaped.vrt").write_text(vrt(str(secret).replace("/", "&#47;")))
    (root / "comment.jpg").write_bytes(b"\xff\xd8\xff\xfe\x01\x01" + vrt(str(secret)).encode())
    (root / "jpgsource.vrt").write_text(vrt("comment.jpg", relative=True))
    for name in [
        "sub/up.vrt",
        "abs.vrt",
        "curl.vrt",
        "zip.vrt",
        "cwd.vrt",
        "evil.vrt",
        "linked.vrt",
        "self.vrt",
        "text.vrt",
        "masked.tif",
        "python.vrt",
        "entity.vrt",
        "case.vrt",
        "ns.vrt",
        "prefix.vrt",
        "subclass.vrt",
        "comment.vrt",
        "spaced.vrt",
        "escaped.vrt",
        "jpgsource.vrt",
    ]:
        response = client.post("/api/images/path", json={"path": name})
        assert response.status_code == 400, name
        assert "VRT" in errors_of(response), (name, errors_of(response))
        assert str(secret) not in errors_of(response)
    for good in ["good.vrt", "sub/nested.vrt"]:
        response = client.post("/api/images/path", json={"path": good})
        assert response.status_code == 200, (good, response.text)
        assert (response.json()["width"], response.json()["height"]) == (16, 16)


def test_the_library_reads_a_file_with_the_driver_its_name_declares(tmp_path, secret):
    from frugalvl.errors import UserError
    from frugalvl.raster import raster_shape, read_image

    masked = tmp_path / "masked.tif"
    masked.write_text(vrt(str(secret)))
    with pytest.raises(UserError, match="not a readable TIFF"):
        read_image(masked)
    assert raster_shape(masked) is None  # the header is not followed either
    honest = tmp_path / "honest.vrt"
    honest.write_text(vrt(str(secret)))
    assert read_image(honest).rgb.shape == (16, 16, 3)  # the CLI's user opens their own VRTs


def test_sniff_names_each_format_by_its_first_bytes():
    from frugalvl.app.formats import declared, sniff

    assert sniff(b"II*\0rest") == sniff(b"MM\0*rest") == sniff(b"II+\0rest") == "tiff"
    assert sniff(b"\x89PNG\r\n\x1a\n....") == "png" and sniff(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff(b"\0\0\0\x0cjP  \r\n\x87\n") == "jp2" and sniff(b"\xff\x4f\xff\x51") == "jp2"
    assert sniff(b"\xef\xbb\xbf <?xml version='1.0'?>\n<VRTDataset>") == "vrt"
    assert sniff(b"\xff\xd8\xff\xfe\x01\x01<VRTDataset>") is None  # a JPEG comment GDAL might take for a VRT
    assert sniff(b"<GDALTileIndexDataset>") is None and sniff(b"") is None and sniff(b"BM") is None
    assert declared("a.TIF") == "tiff" and declared("a.jpeg") == "jpeg" and declared("a.txt") is None


# --- 2. model files only from the model-root folder -------------------------------------------------


def test_page_model_names_are_hub_ids_or_files_in_the_model_root(tmp_path, monkeypatch):
    from frugalvl.app.safety import page_model_spec
    from frugalvl.errors import UserError

    root = tmp_path / "models"
    (root / "sam").mkdir(parents=True)
    (root / "mine.pt").write_bytes(b"x")
    (tmp_path / "real.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert page_model_spec("clip", "mine.pt", [root]) == str(root / "mine.pt")
    assert page_model_spec("clip", "ViT-B-16:mine.pt", [root]) == f"ViT-B-16:{root / 'mine.pt'}"
    assert page_model_spec("sam3", "sam", [root]) == str(root / "sam")
    for hub in [("clip", "ViT-B-16"), ("clip", "ViT-B-32:laion2b_s34b_b79k"), ("clip", "hf-hub:org/m")]:
        assert page_model_spec(*hub, [root]) == hub[1]
    assert page_model_spec("sam3", "facebook/sam3", [root]) == "facebook/sam3"
    assert page_model_spec("upsampler", "official", [root]) == "official"

    def refusal(option: str, text: str, roots) -> str:
        with pytest.raises(UserError) as info:
            page_model_spec(option, text, roots)
        return str(info.value).replace(repr(text[:120]), "<name>")

    # the same words whether or not the file exists outside the root
    same = {
        refusal(option, text, [root])
        for option in ("clip", "upsampler", "sam3")
        for text in [
            str(tmp_path / "real.pt"),
            str(tmp_path / "nope.pt"),
            "../real.pt",
            "../nope.pt",
            "~/real.pt",
            "/etc/passwd",
            "/etc/nope",
            "local-dir:/etc",
            "ViT-B-16:/etc/passwd",
            "x\x00y",
            "a" * 5000,
        ]
    }
    assert len({s.replace("clip", "X").replace("upsampler", "X").replace("sam3", "X") for s in same}) == 1, same
    assert "tmp" not in next(iter(same)) and str(tmp_path) not in next(iter(same))
    assert page_model_spec("clip", "real.pt", [root]) == str(root / "real.pt")  # the root's, not the working folder's
    # a hub-like name that the loaders would read as a file of the working folder
    (tmp_path / "ViT-B-16").mkdir()
    (tmp_path / "laion").write_bytes(b"x")
    with pytest.raises(UserError):
        page_model_spec("clip", "ViT-B-16", [root])
    with pytest.raises(UserError):
        page_model_spec("clip", "ViT-B-32:laion", [root])
    with pytest.raises(UserError):
        page_model_spec("clip", "mine.pt", [])  # no model root: no local files at all


def test_a_model_file_in_the_model_root_runs_and_others_fail_without_paths(make_client, wait, tiny_clip_file):
    client = make_client()
    shutil.copy(tiny_clip_file, make_client.root / "copy.pt")
    info = client.post("/api/images/sample", json={"name": "landsat_small"}).json()
    ok = wait(
        client, client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB, "clip": "copy.pt"}).json()
    )
    assert ok["state"] == "done", ok
    run = client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB, "upsampler": "/etc/passwd"})
    assert run.status_code == 400 and "model-root" in errors_of(run)  # refused when asked for, not in the run
    store = client.app.state.sessions.root
    broken = upload(client, "broken.tif", b"II*\0" + b"\0" * 200)
    assert broken.status_code == 400 and "broken.tif" in errors_of(broken)
    for text in (errors_of(run), errors_of(broken)):
        assert str(store) not in text and str(store.resolve()) not in text


# --- 3. Host and Origin -----------------------------------------------------------------------------


def test_host_must_name_this_server_and_changes_must_come_from_its_page(make_client):
    from fastapi.testclient import TestClient

    client = make_client()
    app = client.app
    assert client.get("/").status_code == 200
    rebound = TestClient(app, base_url="http://evil.example:8765", headers={"Origin": "http://evil.example:8765"})
    for method, url in [("GET", "/"), ("GET", "/api/config"), ("POST", "/api/images/sample")]:
        response = rebound.request(method, url, json={"name": "landsat_small"})
        assert response.status_code == 403 and "host" in errors_of(response), url
    assert "frugalvl_session" not in rebound.cookies  # refused before a session is made
    bare = TestClient(app, base_url=ORIGIN)
    body = {"name": "landsat_small"}
    assert bare.get("/api/config").status_code == 200  # reading needs no Origin
    for headers in [
        {},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Referer": "http://evil.example/page"},
        {"Origin": "http://evil.example", "Referer": ORIGIN + "/"},
    ]:
        response = bare.post("/api/images/sample", json=body, headers=headers)
        assert response.status_code == 403, headers
    assert bare.post("/api/images/sample", json=body, headers={"Referer": ORIGIN + "/"}).status_code == 200
    assert bare.post("/api/images/sample", json=body, headers={"Origin": ORIGIN}).status_code == 200
    localhost = TestClient(app, base_url="http://localhost:8765", headers={"Origin": "http://localhost:8765"})
    assert localhost.post("/api/images/sample", json=body).status_code == 200


def test_allowed_hosts_and_wildcard_binding():
    from frugalvl.app import AppConfig

    local = AppConfig()
    assert local.host_allowed("127.0.0.1") and local.host_allowed("localhost") and local.host_allowed("::1")
    assert not local.host_allowed("evil.example") and not local.host_allowed("192.168.1.5")
    proxied = AppConfig(allowed_hosts=("maps.lab.example",))
    assert proxied.host_allowed("maps.lab.example") and not proxied.host_allowed("lab.example")
    everywhere = AppConfig(host="0.0.0.0")
    assert everywhere.host_allowed("192.168.1.5") and everywhere.host_allowed("::1")
    assert not everywhere.host_allowed("attacker.example") and not everywhere.host_allowed("127.0.0.1.nip.io")


# --- 4. resource caps -------------------------------------------------------------------------------


@pytest.fixture
def served(tiny_clip_file, tmp_path):
    """``served(**config)`` -> (the app, its URL): uvicorn on 127.0.0.1 in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    from frugalvl.app import AppConfig, create_app

    started = []

    def serve(**overrides):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = dict(models={"clip": str(tiny_clip_file)}, workdir=tmp_path / "work", port=port)
        app = create_app(AppConfig(**{**settings, **overrides}))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        started.append((server, thread, app))
        return app, port

    yield serve
    for server, thread, app in started:
        server.should_exit = True
        thread.join(10)
        app.state.close()


def test_a_chunked_upload_is_refused_while_it_streams(served):
    app, port = served(max_upload_mb=1.0)
    boundary = "frugalvlboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.tif"\r\n'
        "Content-Type: image/tiff\r\n\r\n"
    ).encode()
    request = (
        f"POST /api/images/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"\0" * (256 << 10)
    sent, reply = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request + b"%x\r\n%s\r\n" % (len(head), head))
        try:
            while sent < (1000 << 20):  # 1000 MB offered, 1 MB accepted
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while data := sock.recv(65536):
                reply += data
        except (ConnectionResetError, TimeoutError):
            pass
    assert sent < (64 << 20), f"the server read {sent >> 20} MB before refusing"
    assert b" 413 " in reply.split(b"\r\n", 1)[0], reply[:200]
    assert b"more than this server accepts" in reply
    assert not [p for p in app.state.sessions.root.rglob("*") if p.is_file()]  # nothing left written


def test_sessions_images_and_memory_are_capped(make_client, small_png):
    from fastapi.testclient import TestClient

    first = make_client(max_sessions=2, max_images=2)
    app = first.app
    data = small_png.read_bytes()
    full = [first, make_client(app=app)]
    for client in full:
        assert upload(client, "a.png", data).status_code == 200
    late = TestClient(app, base_url=ORIGIN, headers={"Origin": ORIGIN})
    response = late.get("/api/config")
    assert response.status_code == 429 and "sessions" in errors_of(response)
    assert len(app.state.sessions) == 2
    # empty sessions make room for new ones: a flood of cookie-less requests pushes out no one's images
    spare = make_client(max_sessions=3)
    for _ in range(10):
        assert TestClient(spare.app, base_url=ORIGIN).get("/api/config").status_code == 200
    assert upload(spare, "a.png", data).status_code == 200
    for _ in range(10):
        assert TestClient(spare.app, base_url=ORIGIN).get("/api/config").status_code == 200
    assert spare.get("/api/config").status_code == 200 and len(spare.app.state.sessions) == 3
    # images per session: the oldest is closed, its upload deleted
    ids = [upload(first, f"{i}.png", data).json()["id"] for i in range(4)]
    session = app.state.sessions.get(first.cookies.get("frugalvl_session"))
    assert list(session.images) == ids[-2:]
    assert first.get(f"/api/images/{ids[0]}").status_code == 404
    assert len([p for p in session.folder.rglob("*.png")]) == 2
    # memory per session: one image above the whole budget is 413
    tiny = make_client(max_session_mb=0.01)
    response = upload(tiny, "a.png", data)
    assert response.status_code == 413 and "MB" in errors_of(response)


# --- 5. inputs refused at the edge ------------------------------------------------------------------


def test_numbers_and_texts_out_of_range_are_422_or_400_never_500(make_client, wait):
    client = make_client()
    info = client.post("/api/images/sample", json={"name": "landsat_small"}).json()
    run = wait(client, client.post("/api/runs", json={"image": info["id"], "vocabulary": VOCAB}).json())
    rid = run["id"]
    for url in [
        f"/api/runs/{rid}/scores?lat=nan&lng=0",
        f"/api/runs/{rid}/scores?lat=0&lng=inf",
        f"/api/runs/{rid}/scores?lat=1e308&lng=0",
        f"/api/images/{info['id']}/tiles/99999/0/0.png",
        f"/api/images/{info['id']}/tiles/3/-1/0.png",
        f"/api/runs/{rid}/tiles/4/{1 << 40}/0.png",
        f"/api/runs/{rid}/image.png?hide=" + "1," * 5000,
    ]:
        response = client.get(url)
        assert response.status_code == 422, (url, response.status_code)
        assert "\n" not in errors_of(response)
    assert client.get(f"/api/runs/{rid}/scores?lat=95&lng=0").status_code == 400
    assert client.get(f"/api/runs/{rid}/image.png?hide=" + "9" * 30).status_code == 400
    assert client.get(f"/api/runs/{rid}/image.png?hide=-1").status_code == 400
    body = {"image": info["id"], "vocabulary": VOCAB}
    for bad in [
        {"prob_thd": float("nan")},
        {"cls_lambda": float("inf")},
        {"area": "visible", "bounds": [[float("nan"), 0], [1, 1]]},
        {"area": "visible", "bounds": [[0, 0], [1e300, 1]]},
        {"area": "visible", "bounds": [[0, 0, 0], [1, 1]]},
        {"clip": "x" * 5000},
        {"vocabulary": "a;" * 20000},
    ]:
        response = client.post(
            "/api/runs", content=json.dumps({**body, **bad}), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (bad, response.text)
    out_of_range = client.post("/api/runs", json={**body, "prob_thd": 5.0})
    assert out_of_range.status_code == 400 and "prob_thd" in errors_of(out_of_range)
    poles = client.post("/api/runs", json={**body, "area": "visible", "bounds": [[-90, -180], [90, 180]]})
    assert poles.status_code == 200, poles.text  # the whole world in view: the whole image
    for path in ["a" * 100_000, "a/" * 400 + "x.tif", ("b" * 300 + "/") * 3]:
        response = client.post("/api/images/path", json={"path": path})
        assert response.status_code in (400, 422) and "\n" not in errors_of(response), path[:20]
    assert client.post("/api/images/upload", content=b"x", headers={"content-type": "text/plain"}).status_code == 400


def test_frugalvl_app_bad_port_or_busy_port_is_one_line(capsys):
    from frugalvl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--port", "99999"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("port 99999 is not a TCP port: give 0 to 65535")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["app", "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot serve" in err and "Traceback" not in err


def test_a_large_json_body_is_refused_without_being_read_whole(make_client):
    client = make_client()
    big = json.dumps({"path": "x" * (2 << 20)}).encode()
    response = client.post("/api/images/path", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "more than this server reads" in errors_of(response)

    def chunks():
        for _ in range(8):
            yield b" " * (256 << 10)
        yield b'{"path": "x"}'

    response = client.post("/api/images/path", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    for text in ['"\\ud800.tif"', '"a\\udcff/b"']:  # lone surrogates, as JSON escapes
        response = client.post(
            "/api/images/path",
            content=b'{"path": ' + text.encode() + b"}",
            headers={"content-type": "application/json"},
        )
        assert response.status_code in (400, 422) and "\n" not in errors_of(response), text
    assert client.post("/api/images/path", json={"path": "scene.tif"}).status_code == 400  # not there: still one line


def test_vocabulary_size_and_the_query_cache_are_bounded(make_client):
    from frugalvl.app.engine import MAX_CLASSES, QueryCache

    client = make_client()
    info = client.post("/api/images/sample", json={"name": "landsat_small"}).json()
    many = ";".join(f"c{i}" for i in range(MAX_CLASSES + 1))
    response = client.post("/api/runs", json={"image": info["id"], "vocabulary": many})
    assert response.status_code == 400 and "split it into several runs" in errors_of(response)
    synonyms = "water;" + ",".join(f"s{i}" for i in range(600))
    assert client.post("/api/runs", json={"image": info["id"], "vocabulary": synonyms}).status_code == 400
    cache = QueryCache(max_items=4)
    for k in "abcd":
        cache[k] = k
    assert "a" in cache  # a use: "b" is now the oldest
    cache["e"] = "e"
    cache["f"] = "f"
    assert list(cache) == ["d", "a", "e", "f"] and len(cache) == 4
