"""Verified, resumable downloads of released checkpoints.

The official release fetches its checkpoints with a bare `requests.get` written straight to the final
name: an interrupted transfer, a Dropbox/Google Drive HTML page or a quota error leaves a file that looks
like a checkpoint and fails later with an unreadable traceback. This engine guarantees that the final
name appears only after a complete, verified transfer:

* bytes go to `<name>.part`; a later run resumes it with an HTTP Range request guarded by `If-Range` on
  the validator (ETag, else Last-Modified) the server gave for those bytes, kept in `<name>.part.meta`:
  a file changed on the server answers 200 and the download restarts from zero instead of splicing old
  bytes onto new ones; without a validator a partial file is never resumed;
* a file is installed only when its length is proven: Content-Length / Content-Range, the chunked
  encoding's final chunk, or a recorded size or SHA-256. A body that simply ends when the connection
  closes (no length, not chunked) cannot be told from a cut connection and is refused;
* an existing destination counts as downloaded only when it is a non-empty regular file (matching the
  recorded size / SHA-256 when known);
* connection errors, timeouts and 5xx/429 answers are retried with exponential backoff; an attempt that
  made progress does not count against the retry budget;
* Google Drive's "can't scan this file for viruses" page (old cookie/confirm-token style and the new
  `drive.usercontent.google.com` form) is followed; any other HTML page is refused;
* the size is checked against Content-Length / Content-Range and the recorded size; the SHA-256 against
  the recorded hash, or computed, printed and written to `<file>.sha256` when none is recorded;
* every failure is a DownloadError with one readable line (HTTP status, no network, disk full, ...).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO, Callable, Optional
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

import requests

from modules.io.atomic import _fsync_dir, atomic_write_text

MIRROR_ENV = "KARL_DOWNLOAD_MIRROR"  # base URL replacing the original hosts (mirrors, tests)
USER_AGENT = "kolmogorov-tokenizers-downloader/0.1 (python-requests)"
CHUNK_SIZE = 1 << 20  # 1 MiB
_HTML_PREFIXES = (b"<!doctype", b"<html", b"<head", b"<body")
_MAX_CONFIRM_HOPS = 3  # Google Drive needs at most one; a loop means we misread the page


class DownloadError(RuntimeError):
    """A download failed; the message is one readable line meant for the user."""


@dataclass(frozen=True)
class RemoteFile:
    """One released file: where it is published and what it must look like once downloaded.

    relpath: path under the output folder (also the path under a mirror's base URL).
    url: direct-download URL; None when no working link is known (see `note`).
    sha256 / size: recorded when known (the official releases publish neither).
    """

    relpath: str
    url: Optional[str]
    source: str  # the page that publishes the link, for the user to check when it breaks
    sha256: Optional[str] = None
    size: Optional[int] = None
    note: str = ""

    @property
    def name(self) -> str:
        return Path(self.relpath).name


def google_drive_url(file_id: str) -> str:
    """Direct-download URL of a publicly shared Google Drive file (confirmation page handled later)."""
    return f"https://drive.google.com/uc?export=download&id={file_id}"


def dropbox_direct_url(url: str) -> str:
    """Dropbox share links end in dl=0 (a web page); dl=1 returns the file itself."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query, keep_blank_values=True)
    query["dl"] = ["1"]
    return urlunparse(parsed._replace(query=urlencode(query, doseq=True)))


def mirror_url(remote: RemoteFile, mirror: Optional[str] = None) -> Optional[str]:
    """`<mirror>/<relpath>` when a mirror is given or set in $KARL_DOWNLOAD_MIRROR, else the original URL."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    if mirror:
        return mirror.rstrip("/") + "/" + remote.relpath
    return remote.url


def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# --- Google Drive confirmation page ----------------------------------------------------------------------

class _FormParser(HTMLParser):
    """Collects <form action> with its hidden inputs, and <a href> links, from an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self._form: Optional[tuple[str, dict[str, str]]] = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        attr = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._form = (attr.get("action", ""), {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and attr.get("name"):
            self._form[1][attr["name"]] = attr.get("value", "")
        elif tag == "a" and attr.get("href"):
            self.links.append(attr["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def confirmation_url(page: str, page_url: str, cookies: dict[str, str]) -> Optional[str]:
    """The URL that fetches the file behind a Google-Drive-style "download anyway" page, or None.

    Handles: the current form (`<form action=".../download"><input name="confirm" ...>`), older pages
    linking to `...&confirm=<token>`, and the oldest variant where the token is in a
    `download_warning*` cookie. Any other page (quota exceeded, sign-in, 404 page) gives None.
    """
    parser = _FormParser()
    try:
        parser.feed(page)
    except Exception:  # malformed HTML: treat as "not a confirmation page"
        return None
    for action, fields in parser.forms:
        if "confirm" in fields or "id" in fields and "download" in action:
            target = urljoin(page_url, unescape(action) or page_url)
            separator = "&" if urlparse(target).query else "?"
            return target + separator + urlencode(fields)
    for href in parser.links:
        if "confirm=" in href:
            return urljoin(page_url, unescape(href))
    token = next((v for k, v in cookies.items() if k.startswith("download_warning")), None)
    if token:
        parsed = urlparse(page_url)
        query = parse_qs(parsed.query)
        query["confirm"] = [token]
        return urlunparse(parsed._replace(query=urlencode(query, doseq=True)))
    match = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    if match:
        parsed = urlparse(page_url)
        query = parse_qs(parsed.query)
        query["confirm"] = [match.group(1)]
        return urlunparse(parsed._replace(query=urlencode(query, doseq=True)))
    return None


def _looks_like_html(content_type: str, first_bytes: bytes) -> bool:
    if "text/html" in content_type.lower():
        return True
    return first_bytes.lstrip()[:16].lower().startswith(_HTML_PREFIXES)


# --- the transfer -----------------------------------------------------------------------------------------

class _Retryable(Exception):
    """Internal: a failure worth another attempt (network, 5xx, truncated body)."""


def _describe_connection_error(err: Exception, url: str) -> str:
    host = urlparse(url).hostname or url
    text = str(err)
    if any(s in text for s in ("Name or service not known", "nodename nor servname", "getaddrinfo failed",
                               "Temporary failure in name resolution", "NameResolutionError",
                               "No address associated", "Failed to resolve")):
        return f"cannot resolve host {host} (no network or DNS?)"
    if "Connection refused" in text or "ECONNREFUSED" in text or "Errno 111" in text:
        return f"connection refused by {host} (no network, proxy or firewall?)"
    if isinstance(err, requests.Timeout):
        return f"timed out talking to {host}"
    return f"connection to {host} failed ({type(err).__name__})"


def _open_part(path: Path, append: bool) -> BinaryIO:
    return open(path, "ab" if append else "wb")


def _parse_content_range(value: str) -> tuple[Optional[int], Optional[int]]:
    # "bytes 100-199/1000" -> (100, 1000); "bytes */1000" -> (None, 1000)
    match = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _disk_full_error(folder: Path, needed: Optional[int], free: Optional[int] = None) -> DownloadError:
    need = f"{needed} more bytes ({human_bytes(needed)})" if needed is not None else "more space"
    have = f" but only {free} bytes are free" if free is not None else ""
    return DownloadError(f"disk full: the folder {folder} needs {need}{have}; free some space and run "
                         f"again to resume the partial download")


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: Optional[str] = None,
    size: Optional[int] = None,
    overwrite: bool = False,
    retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    timeout: float | tuple[float, float] = (15.0, 60.0),
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
    log: Callable[[str], None] = print,
    session: Optional[requests.Session] = None,
) -> Path:
    """Download `url` to `dest`, verified. Returns `dest`.

    The file appears under `dest` only when complete and verified; meanwhile it lives in
    `<dest>.part`, which a later call resumes. `retries` bounds the attempts that make no progress;
    waits grow as backoff * 2**k (capped at max_backoff). Raises DownloadError.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    expected_sha = sha256.lower() if sha256 else None

    if (dest.exists() or dest.is_symlink()) and not dest.is_file():
        raise DownloadError(f"{dest} exists but is not a file (a folder or a broken link?); move it away and "
                            f"run again")
    if dest.is_file() and dest.stat().st_size == 0:
        log(f"{dest} is empty (an interrupted copy?): downloading it again")
        dest.unlink()
    if dest.exists() and not overwrite:
        if size is not None and dest.stat().st_size != size:
            raise DownloadError(f"{dest} exists but has {dest.stat().st_size} bytes, the release has {size}; "
                                f"run again with --overwrite to replace it")
        if expected_sha and sha256_file(dest) != expected_sha:
            raise DownloadError(f"{dest} exists but its SHA-256 does not match the recorded one; "
                                f"run again with --overwrite to replace it")
        log(f"{dest} already exists, skipping (use --overwrite to download again)")
        return dest

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the folder {dest.parent}: {err.strerror or err}") from None

    own_session = session is None
    session = session or requests.Session()
    session.headers.setdefault("User-Agent", USER_AGENT)
    try:
        total = _transfer(session, url, part, size, retries, backoff, max_backoff, timeout, chunk_size,
                          progress, log, dest.name, verifiable=size is not None or expected_sha is not None)
    finally:
        if own_session:
            session.close()

    received = part.stat().st_size
    if total is not None and received != total:
        raise DownloadError(f"incomplete download of {dest.name}: got {received} of {total} bytes")
    if size is not None and received != size:
        _discard(part)
        raise DownloadError(f"wrong size for {dest.name}: got {received} bytes, the release has {size}; "
                            f"the partial file was deleted")

    actual_sha = sha256_file(part)
    if expected_sha and actual_sha != expected_sha:
        _discard(part)
        raise DownloadError(f"SHA-256 mismatch for {dest.name}: expected {expected_sha}, got {actual_sha}; "
                            f"the corrupted download was deleted (run again, or report a changed file)")
    os.replace(part, dest)
    _meta_path(part).unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    if expected_sha:
        log(f"{dest}: SHA-256 verified ({actual_sha})")
    else:
        checksum_file = dest.with_name(dest.name + ".sha256")
        atomic_write_text(checksum_file, f"{actual_sha}  {dest.name}\n")
        log(f"{dest}: no recorded SHA-256; computed {actual_sha} (written to {checksum_file.name})")
    return dest


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".meta")


def _read_meta(part: Path) -> dict:
    """What the server said about the bytes in `part`: {"etag", "last_modified", "total"} (may be empty)."""
    try:
        meta = json.loads(_meta_path(part).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _validator(meta: dict) -> Optional[str]:
    """The If-Range value for resuming: a strong ETag, else Last-Modified (RFC 9110 13.1.5); None: unsafe."""
    etag = meta.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return meta.get("last_modified") or None


def _transfer(session: requests.Session, url: str, part: Path, size: Optional[int], retries: int,
              backoff: float, max_backoff: float, timeout, chunk_size: int, progress: bool,
              log: Callable[[str], None], label: str, verifiable: bool = False) -> Optional[int]:
    """Fill `part` with the whole file; returns its total size when proven (server length or chunked end)."""
    failures = 0
    hops = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        if size is not None and offset > size:
            _discard(part)  # larger than the file can be: not ours, start over
            offset = 0
        if size is not None and offset == size and offset > 0:
            return size  # a previous run already received everything; verify it
        if offset > 0 and _validator(_read_meta(part)) is None:
            # nothing proves the server still has the file these bytes came from: start over
            log(f"{label}: the partial download cannot be checked against the server's file (no ETag / "
                f"Last-Modified recorded); restarting from zero")
            _discard(part)
            offset = 0
        try:
            outcome = _attempt(session, url, part, offset, size, timeout, chunk_size, progress, label, verifiable)
        except _Retryable as err:
            progressed = part.exists() and part.stat().st_size > offset
            failures = 0 if progressed else failures + 1
            if failures > retries:
                raise DownloadError(f"{err} (gave up after {retries + 1} attempts)") from None
            wait = min(max_backoff, backoff * 2 ** max(failures - 1, 0))
            log(f"{label}: {err}; retrying in {wait:.1f}s")
            time.sleep(wait)
            continue
        if isinstance(outcome, str):  # a confirmation page pointed at the real download
            hops += 1
            if hops > _MAX_CONFIRM_HOPS:
                raise DownloadError(f"{label}: the server keeps answering with confirmation pages; "
                                    f"download it by hand from {url}")
            url = outcome
            continue
        return outcome


def _attempt(session: requests.Session, url: str, part: Path, offset: int, size: Optional[int], timeout,
             chunk_size: int, progress: bool, label: str, verifiable: bool = False):
    """One HTTP request. Returns the total size (int/None) when done, a URL (str) to follow instead, or
    raises _Retryable / DownloadError."""
    # identity: Content-Length then counts the bytes we store (a gzip-encoded body would not match it)
    headers = {"Accept-Encoding": "identity"}
    meta = _read_meta(part) if offset > 0 else {}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        if _validator(meta):
            headers["If-Range"] = _validator(meta)
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
    except (requests.ConnectionError, requests.Timeout) as err:
        raise _Retryable(_describe_connection_error(err, url)) from None
    except requests.RequestException as err:
        raise DownloadError(f"cannot download {url}: {type(err).__name__}: {err}") from None

    with response:
        status = response.status_code
        if status == 416 and offset > 0:
            # Nothing left past `offset`: the part is complete if the server's total says so.
            _, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if total is not None and total == offset and total == meta.get("total"):
                return total
            _discard(part)
            raise _Retryable(f"server refused to resume {label} (HTTP 416); restarting from zero")
        if status >= 500 or status == 429:
            raise _Retryable(f"HTTP {status} {response.reason or ''} from {urlparse(url).hostname}".strip())
        if status >= 400:
            raise DownloadError(f"HTTP {status} {response.reason or ''} for {url} (link broken or moved? "
                                f"set {MIRROR_ENV} or pass --url to use another copy)".replace("  ", " "))
        if status not in (200, 206):
            raise DownloadError(f"unexpected HTTP {status} for {url}")

        content_type = response.headers.get("Content-Type", "")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
        etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                _discard(part)
                raise _Retryable(f"server resumed {label} at the wrong offset; restarting from zero")
            # a server that ignores If-Range still shows the file changed in its validators or size
            changed = ((etag and meta.get("etag") and etag != meta["etag"])
                       or (modified and meta.get("last_modified") and modified != meta["last_modified"])
                       or (total is not None and meta.get("total") is not None and total != meta["total"]))
            if changed:
                _discard(part)
                raise _Retryable(f"{label} changed on the server since the partial download; restarting from zero")
            append = True
        else:
            # 200: a fresh download, a file changed since the partial one (If-Range), or a server that
            # ignores Range: start over, remembering what identifies these bytes for a later resume
            offset, total, append = 0, length, False

        chunks = response.iter_content(chunk_size=chunk_size)
        try:
            first = next(chunks, b"")
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.Timeout) as err:
            raise _Retryable(_describe_connection_error(err, url)) from None

        # A 200 answer restarts from byte 0, so its body can be sniffed; a 206 body is mid-file.
        if _looks_like_html(content_type, b"" if append else first):
            try:
                page_bytes = first + b"".join(_take(chunks, 2 << 20))
            except requests.RequestException:
                page_bytes = first  # the start of the page is enough to recognise it
            page = page_bytes.decode("utf-8", errors="replace")
            follow = confirmation_url(page, response.url, session.cookies.get_dict())
            if follow is not None:
                return follow
            title = re.search(r"<title>(.*?)</title>", page, re.IGNORECASE | re.DOTALL)
            title_text = f" (page title: {title.group(1).strip()[:80]!r})" if title else ""
            raise DownloadError(f"{url} returned an HTML page instead of {label}{title_text}; the link "
                                f"may be broken, rate-limited or need a sign-in")

        if total is not None and size is not None and total != size:
            raise DownloadError(f"the server offers {total} bytes for {label} but the release has {size}; "
                                f"refusing a different file")
        if total is not None:
            free = shutil.disk_usage(part.parent).free
            needed = total - offset
            if needed > free:
                raise _disk_full_error(part.parent, needed, free)

        if not append:
            _meta_path(part).unlink(missing_ok=True)  # the old record must not vouch for new bytes
        if total is None and not chunked and not verifiable:
            raise DownloadError(
                f"the server sends {label} without a length (no Content-Length, not chunked), so a cut "
                f"connection cannot be told from the end of the file; refusing to install it unverified "
                f"(use another link / mirror, or record the file's size or SHA-256)")

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=label, leave=True)
        written = offset
        if not append:
            atomic_write_text(_meta_path(part), json.dumps({"url": url, "etag": etag, "last_modified": modified,
                                                            "total": total}))
        try:
            with _open_part(part, append) as f:
                for chunk in _chain(first, chunks):
                    if not chunk:
                        continue
                    f.write(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        # requests' errors subclass OSError: catch them before the disk errors.
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.Timeout) as err:
            raise _Retryable(f"connection lost after {human_bytes(part.stat().st_size)} of {label} "
                             f"({type(err).__name__})") from None
        except OSError as err:
            if err.errno == errno.ENOSPC:
                remaining = (total - written) if total is not None else None
                raise _disk_full_error(part.parent, remaining) from None
            raise DownloadError(f"cannot write {part}: {err.strerror or err}") from None
        finally:
            if bar is not None:
                bar.close()

        received = part.stat().st_size
        if total is not None and received < total:
            raise _Retryable(f"connection closed after {received} of {total} bytes of {label}")
        if total is None and chunked:
            # urllib3 raised above if the final zero-length chunk was missing: the length is now proven
            total = received
        return total


def _take(chunks, limit: int):
    taken = 0
    for chunk in chunks:
        yield chunk
        taken += len(chunk)
        if taken >= limit:
            return


def _chain(first: bytes, rest):
    yield first
    yield from rest


# --- what the download scripts share -----------------------------------------------------------------------

def download_release_files(
    files: list[RemoteFile],
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    url: Optional[str] = None,
    mirror: Optional[str] = None,
    log: Callable[[str], None] = print,
    **download_kwargs,
) -> list[Path]:
    """Download each RemoteFile to `output_dir / relpath`, verified. Returns the paths.

    `url` replaces the recorded link (only for a single file); `mirror` (default: $KARL_DOWNLOAD_MIRROR)
    replaces the host: the file is fetched from `<mirror>/<relpath>`. Raises DownloadError on the first
    failure (files already finished stay in place).
    """
    if url is not None and len(files) != 1:
        raise DownloadError(f"--url needs exactly one file, but {len(files)} are selected; "
                            f"pick one with --model/--dataset")
    paths = []
    for remote in files:
        source = url or mirror_url(remote, mirror)
        if source is None:
            raise DownloadError(f"no download link is known for {remote.relpath}: {remote.note} "
                                f"(pass --url or set {MIRROR_ENV})")
        dest = Path(output_dir) / remote.relpath
        log(f"downloading {remote.relpath} from {source}")
        paths.append(download_file(source, dest, sha256=remote.sha256, size=remote.size, overwrite=overwrite,
                                   log=log, **download_kwargs))
    return paths


def run_download_command(action: Callable[[], None]) -> int:
    """Exit status of a download script: 0 done, 1 with one `error: ...` line, 130 on Ctrl-C (resumable)."""
    try:
        action()
    except (DownloadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0
