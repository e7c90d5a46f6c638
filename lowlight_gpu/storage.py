"""Object storage (s3://, gs://, az://) through fsspec: the one place that knows a URL from a local path.

A local path never comes here: local runs keep their POSIX code (atomic renames, flock, copy_file_range).
A URL's filesystem is made from the URL, the standard credential sources of its SDK (``AWS_*`` variables,
``AWS_ENDPOINT_URL`` for an S3-compatible server, ``~/.aws``, gcloud's and Azure's own files), fsspec's
config, and the run's ``storage_options``, which override them.  Those options may hold secrets, so they are
never written anywhere: not to run.json, dataset.json, a manifest, a log or an error message.

What object storage guarantees, and what the run relies on (docs/cluster.md):

* a PUT of one object is atomic: a reader sees all of its bytes or none (a killed multipart upload leaves
  no object); there is no rename, so every object is written once under its final name;
* a conditional PUT (``If-None-Match: *``) creates an object only if none exists, where the store has it
  (``create_exclusive``): the run record and shard locks use it.
"""

from __future__ import annotations

import atexit
import os
import posixpath
import re
import tempfile

from .errors import ConfigError, StorageError

# URL scheme -> the extra that installs its fsspec filesystem.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
_URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_FILESYSTEMS = {}  # (protocol, options) -> fsspec filesystem, one per process


def scheme(path) -> str | None:
    """The URL scheme of path ('s3'), or None for a local path (file:// counts as local)."""
    m = _URL_RE.match(str(path))
    if not m or m.group(1).lower() == "file":
        return None
    return m.group(1).lower()


def is_url(path) -> bool:
    """Whether path names object storage rather than a local file."""
    return scheme(path) is not None


def check_url(key, url):
    """ConfigError (exit 2) unless url's scheme is one we support and its filesystem package is installed."""
    name = scheme(url)
    if name not in EXTRAS:
        raise ConfigError(f"{key}: '{url}' uses scheme '{name}://', which lowlight-gpu cannot read or write; "
                          f"use a local path or one of {', '.join(s + '://' for s in ('s3', 'gs', 'az'))}")
    try:
        import fsspec

        fsspec.get_filesystem_class(name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{key}: '{url}' needs the {name}:// filesystem ({_first_line(exc)}); "
                          f"pip install 'lowlight-gpu[{EXTRAS[name]}]'") from None
    bucket = strip(url).split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"{key}: '{url}' names no bucket; write {name}://BUCKET/PREFIX")


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def strip(url) -> str:
    """The URL without its scheme and trailing slashes: 'bucket/prefix'."""
    return _URL_RE.sub("", str(url)).rstrip("/")


def join(root, rel) -> str:
    """root/rel for a URL root (rel uses '/')."""
    return posixpath.join(str(root).rstrip("/"), rel)


def filesystem(url, options=None):
    """The fsspec filesystem for url's scheme with these storage options (cached per process)."""
    import fsspec

    name = scheme(url)
    key = (name, _freeze(options or {}))
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        # No cached listings: a run lists, writes, then asks for what it wrote, and a stale listing would say
        # a new object is missing (or an old size); every question goes to the store.
        fs = _FILESYSTEMS[key] = fsspec.filesystem(name, **{"use_listings_cache": False, **dict(options or {})})
    return fs


def _freeze(value):
    """A hashable form of nested options."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _one_get(url):
    """cat_file options that read a whole object in one GET: s3fs otherwise sends a HEAD first (for the size,
    to split a large object over concurrent ranged GETs), doubling the requests of many small reads."""
    return {"max_concurrency": 1} if scheme(url) in ("s3", "s3a") else {}


def _storage_error(exc, url, doing):
    """A StorageError (exit 4) for a failed request, naming the URL but no credential."""
    reason = _first_line(exc)
    return StorageError(None, f"cannot {doing}: {reason}", str(url))


def _precondition_failed(exc) -> bool:
    """Whether a conditional PUT failed because an object is already there (HTTP 412 PreconditionFailed).

    s3fs makes that a FileExistsError only when the reply names the If-None-Match condition, as AWS does;
    SeaweedFS's reply does not, so s3fs gives an OSError(EINVAL) whose cause is botocore's ClientError.
    """
    response = getattr(exc.__cause__, "response", None) or {}
    if response.get("Error", {}).get("Code") == "PreconditionFailed":
        return True
    if response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
        return True
    return "PreconditionFailed" in str(exc) or "412" in str(exc)


class Location:
    """A folder on object storage: its URL, its filesystem, and the operations a run needs, by relative path."""

    def __init__(self, url, options=None):
        self.url = str(url).rstrip("/")
        self.options = dict(options or {})
        self._fs = None

    def __getstate__(self):  # a filesystem does not travel to worker processes; each makes its own
        return {"url": self.url, "options": self.options, "_fs": None}

    @property
    def fs(self):
        """The fsspec filesystem (made on first use in each process)."""
        if self._fs is None:
            self._fs = filesystem(self.url, self.options)
        return self._fs

    def key(self, rel) -> str:
        """The filesystem path (bucket/prefix/rel) of rel."""
        return strip(self.url) + ("/" + rel if rel else "")

    def url_of(self, rel) -> str:
        """The full URL of rel."""
        return join(self.url, rel)

    def write(self, rel, data: bytes):
        """Put data at rel in one request: a reader sees all of it or, before, what was there."""
        try:
            self.fs.pipe_file(self.key(rel), data)
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(rel), "write") from None

    def write_many(self, items):
        """write() each {rel: bytes}, the requests in flight together (a pair's images: one round trip)."""
        if not items:
            return
        try:
            self.fs.pipe({self.key(rel): data for rel, data in items.items()})
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(next(iter(items))), "write") from None

    def create_exclusive(self, rel, data: bytes) -> bool:
        """Create rel with data only if no object is there; True when this call created it.

        A conditional PUT where the store supports it (S3's If-None-Match); elsewhere a check then a write,
        which two writers racing in the same instant can both pass (docs/cluster.md says what that means).
        """
        key = self.key(rel)
        if scheme(self.url) in ("s3", "s3a"):
            try:
                self.fs.pipe_file(key, data, IfNoneMatch="*")
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if _precondition_failed(exc):
                    return False
                if "NotImplemented" not in str(exc) and "not implemented" not in str(exc).lower():
                    raise _storage_error(exc, self.url_of(rel), "write") from None
            except TypeError:  # an s3fs that does not pass the header: fall back
                pass
        if self.exists(rel):
            return False
        self.write(rel, data)
        return True

    def read(self, rel) -> bytes:
        """The bytes of rel (FileNotFoundError when there is none)."""
        try:
            return self.fs.cat_file(self.key(rel), **_one_get(self.url))
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(rel), "read") from None

    def read_many(self, rels):
        """{rel: bytes} of many objects, fetched concurrently (the journal pieces of a job)."""
        if not rels:
            return {}
        keys = {self.key(rel): rel for rel in rels}
        try:
            found = self.fs.cat(list(keys), on_error="raise", **_one_get(self.url))
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url, "read") from None
        return {keys[k]: v for k, v in found.items()}

    def read_range(self, rel, start, length) -> bytes:
        """length bytes of rel from start (fewer at its end)."""
        try:
            return self.fs.cat_file(self.key(rel), start=start, end=start + length)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(rel), "read") from None

    def size(self, rel):
        """The size of rel in bytes, or None when there is no such object."""
        try:
            info = self.fs.info(self.key(rel))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(rel), "read") from None
        return info.get("size") if info.get("type") != "directory" else None

    def sizes(self, rels):
        """[size or None] of each rel, asked together (a pair's files: one round trip on an async store)."""
        fs = self.fs
        if len(rels) < 2 or not getattr(fs, "async_impl", False):
            return [self.size(rel) for rel in rels]
        import asyncio

        from fsspec.asyn import sync

        async def ask():
            return await asyncio.gather(*[fs._info(self.key(rel)) for rel in rels], return_exceptions=True)

        out = []
        for rel, info in zip(rels, sync(fs.loop, ask)):
            if isinstance(info, FileNotFoundError):
                out.append(None)
            elif isinstance(info, BaseException):
                raise _storage_error(info, self.url_of(rel), "read")
            else:
                out.append(info.get("size") if info.get("type") != "directory" else None)
        return out

    def exists(self, rel) -> bool:
        """Whether an object is at rel."""
        return self.size(rel) is not None

    def remove(self, rel):
        """Delete rel; nothing when it is not there."""
        try:
            self.fs.rm_file(self.key(rel))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(rel), "delete") from None

    def list(self, prefix=""):
        """{rel: size} of every object below prefix (a folder's rel, '' for all), fresh from the store."""
        return {rel: info.get("size") for rel, info in self.objects(prefix)}

    def objects(self, prefix=""):
        """[(rel, fsspec info)] of every object below prefix, fresh from the store: one paged LIST request per
        1000 objects (the store's page), no request per object."""
        base = self.key(prefix).rstrip("/")
        try:
            self.fs.invalidate_cache(base)
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(prefix), "list") from None
        root = strip(self.url) + "/"
        return [(k[len(root):], v) for k, v in found.items() if k.startswith(root) and v.get("type") != "directory"]

    def upload(self, local_path, rel):
        """Copy a local file to rel (multipart for a large one: no object exists until it completes)."""
        try:
            self.fs.put_file(local_path, self.key(rel))
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(rel), "write") from None

    def download(self, rel, local_path):
        """Copy rel to a local file."""
        try:
            self.fs.get_file(self.key(rel), local_path)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's own errors too (no endpoint, no credentials)
            raise _storage_error(exc, self.url_of(rel), "read") from None


def read_url(url, options=None) -> bytes:
    """The bytes of the object at url."""
    fs = filesystem(url, options)
    try:
        return fs.cat_file(strip(url), **_one_get(url))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _storage_error(exc, url, "read") from None


def stat_url(url, options=None):
    """(size, mtime in ns) of the object at url; the mtime is the store's last-modified time."""
    info = filesystem(url, options).info(strip(url))
    return info.get("size"), mtime_ns(info)


def mtime_ns(info) -> int:
    """The last-modified time of an fsspec info dict in integer nanoseconds (0 when the store gives none)."""
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified") or info.get("updated")
    if value is None:
        return 0
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1e6)) * 1000
    if isinstance(value, (int, float)):
        return int(round(value * 1e6)) * 1000
    try:
        from datetime import datetime

        return int(round(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1e6)) * 1000
    except ValueError:
        return 0


def listing(url, options=None):
    """[(rel, size, mtime_ns)] of every object below the folder url, sorted by rel (Location.objects)."""
    return sorted((rel, info.get("size"), mtime_ns(info)) for rel, info in Location(url, options).objects())


def local_copy(url, name, storage_options=None):
    """A fresh local copy of the object url/name (removed when the process ends); None when there is none."""
    fd, path = tempfile.mkstemp(prefix="lowlight-gpu-", suffix="-" + name.replace("/", "_"))
    os.close(fd)
    atexit.register(_remove_quietly, path)
    try:
        Location(url, storage_options).download(name, path)
    except FileNotFoundError:
        _remove_quietly(path)
        return None
    return path


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass
