"""Verified downloads against a local HTTP server started in the test (no internet needed)."""

from __future__ import annotations

import errno
import hashlib
import io
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import modules.io.download as download
from base_tokenizers.pretrained_models import download as base_download
from kolmogorov_tokenizers.pretrained_models import download as karl_download
from modules.io.download import DownloadError, RemoteFile, confirmation_url, download_file, download_release_files

PAYLOAD = random.Random(0).randbytes(200_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
NEW_PAYLOAD = random.Random(1).randbytes(len(PAYLOAD))  # the same file, changed on the server
FAST = dict(retries=2, backoff=0.001, max_backoff=0.002, chunk_size=8192, progress=False)

GDRIVE_FORM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="FILEID"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="1234-abcd">
</form></div></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    """Routes (state on the server object):
    /files/<any>      the payload, honouring Range
    /cut/<any>        first request: full Content-Length but half the body, then the connection closes
    /norange/<any>    ignores Range, always 200 with the whole payload
    /corrupt          the payload with flipped bytes
    /html, /sniff     an HTML page (text/html; or HTML bytes labelled application/octet-stream)
    /error500         always 500; /flaky500 500 twice, then the payload
    /missing          404
    /gdrive/uc        a Drive virus-scan form -> /gdrive/download?id&export&confirm&uuid -> payload
    /gdrive-old/uc    old style: download_warning cookie; payload only with &confirm=<cookie token>
    /quota            a Drive "quota exceeded" HTML page
    """

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/octet-stream",
              headers: dict | None = None, declared_length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(declared_length if declared_length is not None else len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_payload(self, data: bytes, honour_range: bool = True, etag: str | None = '"v1"',
                      honour_if_range: bool = True) -> None:
        range_header = self.headers.get("Range")
        validator = {"ETag": etag} if etag else {}
        if_range = self.headers.get("If-Range")
        if honour_if_range and if_range is not None and if_range != etag:
            range_header = None  # RFC 9110: the file changed, send all of it
        if honour_range and range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes="):].split("-")[0])
            if start >= len(data):
                self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}", **validator})
                return
            self._send(206, data[start:], headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                                                   **validator})
            return
        self._send(200, data, headers=validator)

    def _send_cut(self, data: bytes, etag: str | None, declare_length: bool = True) -> None:
        """Headers for all of `data`, half the body, then the connection drops."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if declare_length:
            self.send_header("Content-Length", str(len(data)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def _send_chunked(self, data: bytes, cut: bool) -> None:
        self.protocol_version = "HTTP/1.1"
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("ETag", '"v1"')
        self.end_headers()
        body = data[: len(data) // 2] if cut else data
        for i in range(0, len(body), 50_000):
            piece = body[i:i + 50_000]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if not cut:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        server = self.server
        url = urlparse(self.path)
        query = parse_qs(url.query)
        server.requests.append((url.path, self.headers.get("Range"), query))
        server.if_ranges.append(self.headers.get("If-Range"))
        count = sum(1 for p, _, _ in server.requests if p == url.path)
        if url.path.startswith("/files/"):
            self._send_payload(PAYLOAD)
        elif url.path.startswith("/cut/"):
            if self.headers.get("Range") is None:
                self._send_cut(PAYLOAD, etag='"v1"')
                return
            self._send_payload(PAYLOAD)
        elif url.path.startswith("/nolength/"):  # no Content-Length, not chunked: the body ends at the close
            self._send_cut(PAYLOAD, etag='"v1"', declare_length=False)
        elif url.path.startswith("/nolength-whole/"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif url.path.startswith("/chunked-cut/"):  # chunked, dropped before the final chunk once
            self._send_chunked(PAYLOAD, cut=count == 1)
        elif url.path.startswith("/changing/") or url.path.startswith("/changing-ignores-if-range/"):
            # version A (cut halfway) on the first request, version B afterwards
            if count == 1:
                self._send_cut(PAYLOAD, etag='"A"')
            else:
                self._send_payload(NEW_PAYLOAD, etag='"B"', honour_if_range=url.path.startswith("/changing/"))
        elif url.path.startswith("/cut-novalidator/"):
            if count == 1:
                self._send_cut(PAYLOAD, etag=None)
            else:
                self._send_payload(PAYLOAD, etag=None)
        elif url.path.startswith("/norange/"):
            self._send_payload(PAYLOAD, honour_range=False)
        elif url.path == "/corrupt":
            corrupted = bytearray(PAYLOAD)
            corrupted[1000:1010] = b"\x00" * 10
            self._send_payload(bytes(corrupted))
        elif url.path == "/html":
            self._send(200, b"<html><head><title>Dropbox - Error</title></head><body>nope</body></html>",
                       "text/html; charset=utf-8")
        elif url.path == "/sniff":
            self._send(200, b"\n  <!DOCTYPE html><html><body>login</body></html>")
        elif url.path == "/error500":
            self._send(500, b"boom", "text/plain")
        elif url.path == "/flaky500":
            if count <= 2:
                self._send(503, b"busy", "text/plain")
            else:
                self._send_payload(PAYLOAD)
        elif url.path == "/missing":
            self._send(404, b"not here", "text/plain")
        elif url.path == "/gdrive/uc":
            page = GDRIVE_FORM_PAGE.format(action="/gdrive/download").encode()
            self._send(200, page, "text/html; charset=utf-8")
        elif url.path == "/gdrive/download":
            if query.get("confirm") == ["t"] and query.get("uuid") == ["1234-abcd"] and query.get("id") == ["FILEID"]:
                self._send_payload(PAYLOAD)
            else:
                self._send(200, GDRIVE_FORM_PAGE.format(action="/gdrive/download").encode(), "text/html")
        elif url.path == "/gdrive-old/uc":
            if query.get("confirm") == ["TOKEN42"] and "download_warning_7=TOKEN42" in (self.headers.get("Cookie") or ""):
                self._send_payload(PAYLOAD)
            else:
                self._send(200, b"<html><body>Google Drive can't scan this file.</body></html>", "text/html",
                           headers={"Set-Cookie": "download_warning_7=TOKEN42; Path=/"})
        elif url.path == "/quota":
            self._send(200, b"<html><head><title>Google Drive - Quota exceeded</title></head><body>Too many "
                            b"users have viewed or downloaded this file recently.</body></html>", "text/html")
        else:
            self._send(404, b"unknown route", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    httpd.if_ranges = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def base_url(server):
    server.requests.clear()
    server.if_ranges.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


def _quiet(_message: str) -> None:
    pass


def _ranges(server, path: str) -> list:
    return [r for p, r, _ in server.requests if p == path]


# --- the engine --------------------------------------------------------------------------------------------

def test_complete_file_is_written_with_computed_checksum(base_url, tmp_path):
    dest = download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert (tmp_path / "model.pth.sha256").read_text() == f"{PAYLOAD_SHA}  model.pth\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "model.pth.sha256"]


def test_recorded_checksum_is_verified(base_url, tmp_path):
    messages = []
    download_file(f"{base_url}/files/a.pth", tmp_path / "a.pth", sha256=PAYLOAD_SHA, size=len(PAYLOAD),
                  log=messages.append, **FAST)
    assert (tmp_path / "a.pth").read_bytes() == PAYLOAD
    assert not (tmp_path / "a.pth.sha256").exists()
    assert any("verified" in m for m in messages)


def test_connection_cut_halfway_is_resumed_with_range(server, base_url, tmp_path):
    dest = download_file(f"{base_url}/cut/model.pth", tmp_path / "model.pth", sha256=PAYLOAD_SHA,
                         log=_quiet, **FAST)
    assert dest.read_bytes() == PAYLOAD
    ranges = _ranges(server, "/cut/model.pth")
    # The second request resumes where the first stopped (bytes of a half-read chunk may be re-fetched).
    assert ranges[0] is None and len(ranges) == 2 and ranges[1].startswith("bytes=")
    assert 0 < int(ranges[1][len("bytes="):-1]) <= len(PAYLOAD) // 2
    assert not (tmp_path / "model.pth.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(server, base_url, tmp_path):
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD[:50_000])
    # what the earlier run recorded about those bytes: the server's validator and the total size
    (tmp_path / "model.pth.part.meta").write_text('{"etag": "\\"v1\\"", "last_modified": null, "total": %d}' % len(PAYLOAD))
    download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", sha256=PAYLOAD_SHA, log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD
    assert _ranges(server, "/files/model.pth") == ["bytes=50000-"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_server_ignoring_range_restarts_from_zero(base_url, tmp_path):
    (tmp_path / "model.pth.part").write_bytes(b"\xff" * 1234)  # stale bytes that must not survive
    download_file(f"{base_url}/norange/model.pth", tmp_path / "model.pth", sha256=PAYLOAD_SHA, log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD


def test_corrupted_bytes_are_refused_and_leave_no_file(base_url, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download_file(f"{base_url}/corrupt", tmp_path / "model.pth", sha256=PAYLOAD_SHA, log=_quiet, **FAST)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("route", ["/html", "/sniff"])
def test_html_page_is_refused(base_url, tmp_path, route):
    with pytest.raises(DownloadError, match="HTML page instead of model.pth"):
        download_file(base_url + route, tmp_path / "model.pth", log=_quiet, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_server_error_gives_clear_message_after_retries(server, base_url, tmp_path):
    with pytest.raises(DownloadError) as info:
        download_file(f"{base_url}/error500", tmp_path / "model.pth", log=_quiet, **FAST)
    message = str(info.value)
    assert "HTTP 500" in message and "gave up after 3 attempts" in message and "\n" not in message
    assert len(_ranges(server, "/error500")) == 3
    assert not (tmp_path / "model.pth").exists()


def test_transient_server_errors_are_retried(server, base_url, tmp_path):
    download_file(f"{base_url}/flaky500", tmp_path / "model.pth", sha256=PAYLOAD_SHA, log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD
    assert len(_ranges(server, "/flaky500")) == 3


def test_client_error_is_not_retried(server, base_url, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{base_url}/missing", tmp_path / "model.pth", log=_quiet, **FAST)
    assert len(_ranges(server, "/missing")) == 1


def test_google_drive_confirmation_form_is_followed(server, base_url, tmp_path):
    download_file(f"{base_url}/gdrive/uc?export=download&id=FILEID", tmp_path / "vqgan.ckpt", sha256=PAYLOAD_SHA,
                  log=_quiet, **FAST)
    assert (tmp_path / "vqgan.ckpt").read_bytes() == PAYLOAD
    assert [p for p, _, _ in server.requests] == ["/gdrive/uc", "/gdrive/download"]


def test_google_drive_cookie_token_is_followed(base_url, tmp_path):
    download_file(f"{base_url}/gdrive-old/uc?export=download&id=FILEID", tmp_path / "vqgan.ckpt",
                  sha256=PAYLOAD_SHA, log=_quiet, **FAST)
    assert (tmp_path / "vqgan.ckpt").read_bytes() == PAYLOAD


def test_google_drive_quota_page_is_refused_with_its_title(base_url, tmp_path):
    with pytest.raises(DownloadError, match="Quota exceeded"):
        download_file(f"{base_url}/quota", tmp_path / "vqgan.ckpt", log=_quiet, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_real_google_drive_form_layout_is_parsed():
    page = GDRIVE_FORM_PAGE.format(action="https://drive.usercontent.google.com/download")
    url = confirmation_url(page, "https://drive.google.com/uc?export=download&id=FILEID", {})
    parsed = urlparse(url)
    assert parsed.netloc == "drive.usercontent.google.com" and parsed.path == "/download"
    assert parse_qs(parsed.query) == {"id": ["FILEID"], "export": ["download"], "confirm": ["t"],
                                      "uuid": ["1234-abcd"]}
    assert confirmation_url("<html><title>Sign in</title></html>", "https://x/y", {}) is None


def test_wrong_size_is_refused(base_url, tmp_path):
    with pytest.raises(DownloadError, match="release has 12345"):
        download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", size=12345, log=_quiet, **FAST)
    assert not (tmp_path / "model.pth").exists()


def test_connection_refused_is_reported(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="connection refused by 127.0.0.1"):
        download_file(f"http://127.0.0.1:{port}/x.pth", tmp_path / "x.pth", log=_quiet, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_unresolvable_host_is_reported(tmp_path):
    with pytest.raises(DownloadError, match="cannot resolve host no-such-host.invalid"):
        download_file("http://no-such-host.invalid/x.pth", tmp_path / "x.pth", log=_quiet,
                      **dict(FAST, retries=0))


class _FullDisk(io.BytesIO):
    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_names_folder_and_bytes(base_url, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_open_part", lambda path, append: _FullDisk())
    with pytest.raises(DownloadError) as info:
        download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    message = str(info.value)
    assert "disk full" in message and str(tmp_path) in message and f"{len(PAYLOAD)} more bytes" in message
    assert not (tmp_path / "model.pth").exists()


def test_not_enough_free_space_is_reported_before_writing(base_url, tmp_path, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    with pytest.raises(DownloadError, match=f"needs {len(PAYLOAD)} more bytes .* only 1000 bytes are free"):
        download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert not (tmp_path / "model.pth").exists()


# --- faults: length unknown, file changed between attempts, bad destinations (docs/FAULTS.md rows 4a-4g) ---

def test_no_length_and_a_cut_connection_is_refused_and_nothing_recorded(base_url, tmp_path):
    with pytest.raises(DownloadError, match="without a length"):
        download_file(f"{base_url}/nolength/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert not (tmp_path / "model.pth").exists() and not (tmp_path / "model.pth.sha256").exists()


def test_no_length_is_accepted_when_the_hash_proves_the_file(base_url, tmp_path):
    download_file(f"{base_url}/nolength-whole/model.pth", tmp_path / "model.pth", sha256=PAYLOAD_SHA, log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):  # ... and refused when it does not
        download_file(f"{base_url}/nolength/other.pth", tmp_path / "other.pth", sha256=PAYLOAD_SHA, log=_quiet, **FAST)
    assert not (tmp_path / "other.pth").exists()


def test_chunked_transfer_cut_before_its_final_chunk_is_not_installed_as_complete(server, base_url, tmp_path):
    download_file(f"{base_url}/chunked-cut/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD  # the cut attempt was retried, not installed
    assert len(_ranges(server, "/chunked-cut/model.pth")) == 2
    assert (tmp_path / "model.pth.sha256").read_text() == f"{PAYLOAD_SHA}  model.pth\n"


@pytest.mark.parametrize("route", ["changing", "changing-ignores-if-range"])
def test_file_changed_on_the_server_between_attempts_is_not_spliced(server, base_url, tmp_path, route):
    download_file(f"{base_url}/{route}/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == NEW_PAYLOAD  # all of the new file, none of the old
    assert (tmp_path / "model.pth.sha256").read_text().split()[0] == hashlib.sha256(NEW_PAYLOAD).hexdigest()


def test_resume_sends_if_range_with_the_servers_validator(server, base_url, tmp_path):
    download_file(f"{base_url}/cut/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert server.if_ranges == [None, '"v1"']


def test_partial_download_without_a_validator_restarts_from_zero(server, base_url, tmp_path):
    download_file(f"{base_url}/cut-novalidator/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD
    assert _ranges(server, "/cut-novalidator/model.pth") == [None, None]


def test_empty_file_at_the_destination_is_downloaded_again(base_url, tmp_path):
    (tmp_path / "model.pth").write_bytes(b"")
    download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD


def test_folder_at_the_destination_is_an_error(base_url, tmp_path):
    (tmp_path / "model.pth").mkdir()
    with pytest.raises(DownloadError, match="not a file"):
        download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", log=_quiet, **FAST)


def test_existing_file_of_the_wrong_recorded_size_is_not_taken(base_url, tmp_path):
    (tmp_path / "model.pth").write_bytes(PAYLOAD[:100])
    with pytest.raises(DownloadError, match="100 bytes"):
        download_file(f"{base_url}/files/model.pth", tmp_path / "model.pth", size=len(PAYLOAD), log=_quiet, **FAST)


def test_existing_file_is_kept_unless_overwrite(server, base_url, tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(b"old")
    download_file(f"{base_url}/files/model.pth", dest, log=_quiet, **FAST)
    assert dest.read_bytes() == b"old" and server.requests == []
    download_file(f"{base_url}/files/model.pth", dest, overwrite=True, log=_quiet, **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_url_override_needs_a_single_file(tmp_path):
    files = [RemoteFile("a.pth", "http://x/a", "test"), RemoteFile("b.pth", "http://x/b", "test")]
    with pytest.raises(DownloadError, match="exactly one file"):
        download_release_files(files, tmp_path, url="http://elsewhere/a", log=_quiet)


# --- the two scripts ---------------------------------------------------------------------------------------

def test_base_tokenizer_script_downloads_both_from_mirror(base_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(download.MIRROR_ENV, f"{base_url}/files")
    assert base_download.main(["--output_dir", str(tmp_path)]) == 0
    for name in ("vqgan.ckpt", "vae.ckpt"):
        assert (tmp_path / name).read_bytes() == PAYLOAD
        assert (tmp_path / f"{name}.sha256").read_text().split()[0] == PAYLOAD_SHA
    assert PAYLOAD_SHA in capsys.readouterr().out


def test_karl_script_puts_files_where_the_release_does(server, base_url, tmp_path, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, f"{base_url}/files/")
    argv = ["--model", "karl_small_vae_continuous", "--dataset", "imagenet100", "--output_dir", str(tmp_path)]
    assert karl_download.main(argv) == 0
    assert (tmp_path / "imagenet100" / "karl_small_vae_continuous_latents.pth").read_bytes() == PAYLOAD
    assert [p for p, _, _ in server.requests] == ["/files/imagenet100/karl_small_vae_continuous_latents.pth"]


def test_karl_script_all_downloads_the_five_released_files(base_url, tmp_path, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, f"{base_url}/files")
    assert karl_download.main(["--output_dir", str(tmp_path)]) == 0
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pth"))
    assert found == ["imagenet/karl_small_vqgan_quantized_latents.pth",
                     "imagenet100/karl_small_vae_continuous_latents.pth",
                     "imagenet100/karl_small_vae_quantized_latents.pth",
                     "imagenet100/karl_small_vqgan_continuous_latents.pth",
                     "imagenet100/karl_small_vqgan_quantized_latents.pth"]


def test_script_failure_exits_nonzero_with_one_line(base_url, tmp_path, capsys):
    argv = ["--model", "vae", "--output_dir", str(tmp_path), "--url", f"{base_url}/missing"]
    assert base_download.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: HTTP 404") and "\n" not in err
    assert not (tmp_path / "vae.ckpt").exists()


def test_script_rejects_unknown_names(tmp_path, capsys):
    assert karl_download.main(["--model", "karl_huge", "--output_dir", str(tmp_path)]) == 1
    assert "allowed: karl_small_vqgan_quantized_latents" in capsys.readouterr().err
    assert karl_download.main(["--model", "karl_small_vae_quantized", "--dataset", "imagenet",
                               "--output_dir", str(tmp_path)]) == 1
    assert "no released checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        base_download.main(["--model", "vqvae"])
    assert info.value.code == 2
    assert "invalid choice: 'vqvae'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_default_destinations_do_not_depend_on_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parent.parent
    assert base_download.base_tokenizer_path("vqgan") == repo / "base_tokenizers/pretrained_models/vqgan.ckpt"
    assert base_download.base_tokenizer_path("vae") == repo / "base_tokenizers/pretrained_models/vae.ckpt"
    assert karl_download.checkpoint_path("karl_small_vqgan_quantized_latents", "imagenet") == \
        repo / "kolmogorov_tokenizers/pretrained_models/imagenet/karl_small_vqgan_quantized_latents.pth"


def test_registry_links_are_direct_downloads():
    for remote in karl_download.RELEASED_CHECKPOINTS.values():
        assert remote.url.startswith("https://www.dropbox.com/scl/fi/") and remote.url.endswith("dl=1")
        assert "rlkey=" in remote.url and remote.url.split("?")[0].endswith(remote.name)
    assert len(karl_download.RELEASED_CHECKPOINTS) == 5
    assert "id=13S_unB87n6KKuuMdyMnyExW0G1kplTbP" in base_download.BASE_TOKENIZER_FILES["vqgan"].url
    assert "kl16.ckpt" in base_download.BASE_TOKENIZER_FILES["vae"].url
