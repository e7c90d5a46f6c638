"""Input lists: ``input`` as a file of paths or URLs (.txt/.lst, one a line; .parquet, a column), read by shares.

Ids.  ``input_root`` (by default: the deepest folder holding the list's first and last entries when they are
absolute paths or URLs, which in a list kept in order holds every entry; else the list's own folder) says what
"relative" means: a relative line is taken below it;
an absolute path or a URL must lie below it, and its id is the part below it.  So ``s3://b/photos/a/x.jpg`` with
input_root ``s3://b/photos`` has id ``a/x.jpg``, what a scan of that folder gives, and a list and a folder give the
same pairs (seeds, names and output names all follow the id).  A line outside input_root is an errors row (its
source: ``outside-input-root/`` and the line, %-escaped), not a crash; a line listed twice counts once; blank lines
and lines starting with '#' are ignored.  The scan's skip rules apply where a list can see them without a request
per file: hidden ids, names that are not images, HEIC/HEIF without a decoder, ids below the current output.  A
listed file is not looked at until its pair is made, so a missing one is that pair's errors row.

Shards.  Job I of N reads only its own share: a contiguous range, not a hash.  A text list is cut at the bytes
``[I*B/N, (I+1)*B/N)``, each cut moved forward to a line start and then to the next folder boundary (a line whose
folder differs from the previous line's); a Parquet list the same over row indices, reading only the row groups it
needs.  So the consecutive lines of one folder always fall in one job, which the output-name rule (``x.jpg`` and
``x.png`` of one folder get distinct names) needs.  A list should therefore keep each folder's lines together
(sorted by folder, then name; a plain string sort puts a sub-folder's lines between its parent's); a folder whose
lines are scattered may be split between jobs, and then two of its files can get the same output name in two jobs.
A job holds its share in memory, sorted, and streams it in id order (the manifest's order).  ScanStats counts the
bytes and lines (rows) the job read.
"""

import bisect
import os
import posixpath
import urllib.parse

from . import storage
from .config import is_input_list
from .errors import ConfigError, StorageError
from .imageio import is_image_name, needs_extra
from .sources import ScanStats, Source, output_names

OUTSIDE = "outside-input-root"  # the folder of the errors rows of lines outside input_root
PARQUET_EXTRA = "pip install 'lowlight-gpu[parquet]'"
_BACK_CHUNK = 256  # bytes first read back when looking for the line before a cut (one line, usually)
_URL_BLOCK = 1 << 20  # bytes per ranged GET of a Parquet list at a URL (s3fs's default, 50 MiB, reads whole lists)
_URL_CHUNK = 256 << 10  # bytes per ranged GET of a text list at a URL
_GROUPS_KEPT = 3  # Parquet row groups held at a time (a cut's look back and forward, and the current one)


def is_list(path):
    """Whether input names an input list (by its extension) rather than a folder."""
    return is_input_list(path)


_ROOTS = {}  # (list, input_column) -> the default root read off the list's ends, once per process


def root_of(config):
    """The folder ids are relative to: input_root when set; else, for a list whose first or last entry is an
    absolute path or a URL, the deepest folder holding both (a sorted list's entries all lie between them, so
    it holds every one: the folder a scan would start from); else the list's own folder."""
    root = config.input_root
    if root is None:
        here = (config.input.rsplit("/", 1)[0] if storage.is_url(config.input)
                else os.path.dirname(os.path.abspath(config.input)))
        key = (config.input if storage.is_url(config.input) else os.path.abspath(config.input), config.input_column)
        if key not in _ROOTS:
            _ROOTS[key] = _common_folder(_ends(config), here)
        root = _ROOTS[key] or here
    return root.rstrip("/") if storage.is_url(root) else os.path.abspath(root)


def _common_folder(ends, here):
    """The deepest folder holding both ends (entries as text), or None when both are relative (or none)."""
    if not ends or not any(storage.is_url(e) or os.path.isabs(e) for e in ends):
        return None

    def absolute(entry):
        if storage.is_url(entry):
            return entry
        if os.path.isabs(entry):
            return os.path.normpath(entry)
        return storage.join(here, entry) if storage.is_url(here) else os.path.normpath(os.path.join(here, entry))

    paths = [absolute(e) for e in ends]
    if len({storage.scheme(p) for p in paths}) > 1:  # a URL and a local path: no common folder
        return None
    sep = "/" if storage.is_url(paths[0]) else os.sep
    folders = [p.rsplit(sep, 1)[0].split(sep) for p in paths]
    common = []
    for parts in zip(*folders):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    if storage.is_url(paths[0]) and len(common) < 3:  # 's3:', '', 'bucket' at least
        return None
    return sep.join(common) or sep


def _ends(config):
    """The first and last entries of the list as text ((), when it has none): two short reads, whatever its size."""
    stats = ScanStats()
    entry = lambda value: _text(value) if _text(value) and not _text(value).startswith("#") else None  # noqa: E731
    if config.input.lower().endswith(".parquet"):
        pq = import_pyarrow(config.input)
        with _open(config.input, config.storage_options, stats, parquet=True) as f:
            try:  # a file that is not Parquet, or without the column: the share's read says so in one line
                rows = _Rows(pq.ParquetFile(f), config.input_column, stats)
                n = len(rows)
                first = next((e for e in (entry(rows.get(i)) for i in range(n)) if e), None)
                last = next((e for e in (entry(rows.get(i)) for i in range(n - 1, -1, -1)) if e), None)
            except (ValueError, TypeError, KeyError):
                return ()
    else:
        with _open(config.input, config.storage_options, stats) as raw:
            size = _size(raw)
            first = None
            while first is None:
                line = raw.readline()
                if not line:
                    break
                first = entry(line)
            last = _line_before(raw, size, entry) if first is not None else None
    return (first, last) if first is not None and last is not None else ()


def _is_plain(line):
    """Whether line is a plain relative path ('a/b.jpg': no URL or drive, no empty, '.' or '..' part)."""
    if ":" in line or "\\" in line or line.startswith("/") or line.endswith("/") or "//" in line:
        return False
    return "/./" not in f"/{line}/" and "/../" not in f"/{line}/"


def locate(line, root):
    """(id, path, error) of one list line below root: error is '' or why the line has no id."""
    if _is_plain(line):  # the common case: nothing to normalise
        return line, (storage.join(root, line) if storage.is_url(root) else os.path.join(root, line)), ""
    outside = f"listed path is outside input_root '{root}'; set input_root to a folder that holds it"
    if storage.is_url(line):
        base = storage.strip(root) + "/"
        key = storage.strip(line)
        if not storage.is_url(root) or storage.scheme(line) != storage.scheme(root) or not key.startswith(base):
            return None, None, outside
        rel = key[len(base):]
    elif os.path.isabs(line):
        if storage.is_url(root):
            return None, None, outside
        rel = os.path.relpath(os.path.normpath(line), root).replace(os.sep, "/")
    else:
        rel = line
    rel = posixpath.normpath(rel)
    if rel in (".", "..") or rel.startswith(("../", "/")):
        return None, None, outside
    path = storage.join(root, rel) if storage.is_url(root) else os.path.join(root, *rel.split("/"))
    return rel, path, ""


def outside_id(line):
    """The errors row id of a line with no id of its own: 'outside-input-root/' and the line, %-escaped into one
    name (an errors row names its source by a plain relative path)."""
    name = urllib.parse.quote(line, safe="")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    return OUTSIDE + "/" + name


def _text(value):
    """A list entry as stripped text ('' for none); bytes are decoded, undecodable bytes kept escaped."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return str(value).strip().lstrip("\ufeff")  # a byte-order mark some editors put before the first line


def folder_key(value, root):
    """The folder of a list entry's id (what keeps a folder in one job), or None for a blank or comment line."""
    text = _text(value)
    if not text or text.startswith("#"):
        return None
    rel, _, error = locate(text, root)
    return posixpath.dirname(rel) if not error else ("", posixpath.dirname(text))


class _Counted:
    """A binary file that counts the bytes and lines read through it (ScanStats.bytes_read, lines_read)."""

    def __init__(self, f, stats):
        self.f = f
        self.stats = stats

    def seek(self, pos):
        self.f.seek(pos)

    def read(self, n):
        data = self.f.read(n)
        self.stats.bytes_read += len(data)
        return data

    def readline(self):
        line = self.f.readline()
        self.stats.bytes_read += len(line)
        self.stats.lines_read += bool(line)
        return line


class _Ranged:
    """A text list at a URL as a read-only file: ranged GETs of _URL_CHUNK bytes, read ahead in order."""

    def __init__(self, fs, key, size, stats):
        self.fs, self.key, self.size, self.stats = fs, key, size, stats
        self.pos, self.buf, self.buf_start = 0, b"", 0

    def seek(self, pos, whence=0):
        self.pos = self.size + pos if whence == os.SEEK_END else pos
        return self.pos

    def tell(self):
        return self.pos

    def _fill(self, n):
        """Make the buffer hold [pos, pos + n) (as far as the object goes), fetching what it lacks."""
        end = min(self.size, self.pos + n)
        buf_end = self.buf_start + len(self.buf)
        if self.buf_start <= self.pos and end <= buf_end:
            return
        if self.buf_start <= self.pos < buf_end:  # keep the rest of the buffer, fetch what follows it
            keep, start = self.buf[self.pos - self.buf_start:], buf_end
        else:
            keep, start = b"", self.pos
        data = self.fs.cat_file(self.key, start=start, end=min(self.size, max(end, start + _URL_CHUNK)))
        self.stats.bytes_fetched += len(data)
        self.buf, self.buf_start = keep + data, self.pos

    def read(self, n=-1):
        n = self.size - self.pos if n < 0 else n
        self._fill(n)
        out = self.buf[self.pos - self.buf_start:self.pos - self.buf_start + n]
        self.pos += len(out)
        return out

    def readline(self):
        pieces = []
        while self.pos < self.size:
            self._fill(1)
            off = self.pos - self.buf_start
            nl = self.buf.find(b"\n", off)
            piece = self.buf[off:] if nl < 0 else self.buf[off:nl + 1]
            self.pos += len(piece)
            pieces.append(piece)
            if nl >= 0:
                break
        return b"".join(pieces)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _line_before(f, s, key):
    """The folder key of the last entry line ending before byte s (a line start), or None when there is none."""
    end, head, step = s, b"", _BACK_CHUNK
    while end > 0:
        start = max(0, end - step)
        step = min(2 * step, 1 << 20)  # long comment runs: read back in growing steps
        f.seek(start)
        buf = f.read(end - start) + head
        lines = buf.split(b"\n")
        if buf.endswith(b"\n"):
            lines.pop()  # the '\n' just before s ends the last line
        complete = lines if start == 0 else lines[1:]  # the first piece may have begun before start
        for line in reversed(complete):
            k = key(line)
            if k is not None:
                return k
        head, end = (lines[0] if lines else b""), start
        if start == 0:
            break
    return None


def text_cut(f, size, pos, key):
    """Where a share of a text list starts when its byte cut is pos: the next line start, then the next folder
    boundary (a line whose folder differs from the previous entry line's)."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    f.seek(pos - 1)
    s = pos - 1 + len(f.readline())  # the line holding byte pos-1 ends at s
    if s >= size:
        return size
    prev = _line_before(f, s, key)
    if prev is None:
        return s
    f.seek(s)
    q = s
    while q < size:
        line = f.readline()
        if not line:
            break
        k = key(line)
        if k is not None and k != prev:
            return q
        q += len(line)
    return size


def _text_share(f, size, shard, key):
    """The lines of shard (index, count) of a text list of size bytes."""
    index, count = shard
    start = text_cut(f, size, index * size // count, key)
    end = text_cut(f, size, (index + 1) * size // count, key)
    f.seek(start)
    pos = start
    while pos < end:
        line = f.readline()
        if not line:
            break
        pos += len(line)
        yield line


class _Rows:
    """One column of a Parquet file by row index, read a row group at a time (only the groups asked for)."""

    def __init__(self, pf, column, stats):
        self.pf, self.column, self.stats = pf, column, stats
        meta = pf.metadata
        self.starts = [0]
        for g in range(meta.num_row_groups):
            self.starts.append(self.starts[-1] + meta.row_group(g).num_rows)
        self.leaf = next((j for j in range(meta.num_columns) if meta.schema.column(j).path == column), None)
        self.groups = {}

    def __len__(self):
        return self.starts[-1]

    def get(self, i):
        """The value of row i."""
        g = bisect.bisect_right(self.starts, i) - 1
        if g not in self.groups:
            if len(self.groups) >= _GROUPS_KEPT:
                self.groups.pop(next(iter(self.groups)))
            values = self.pf.read_row_group(g, columns=[self.column]).column(0).to_pylist()
            self.stats.lines_read += len(values)
            if self.leaf is not None:
                self.stats.bytes_read += self.pf.metadata.row_group(g).column(self.leaf).total_compressed_size
            self.groups[g] = values
        return self.groups[g][i - self.starts[g]]


def row_cut(rows, pos, key):
    """text_cut over the rows of a Parquet list."""
    n = len(rows)
    if pos <= 0:
        return 0
    if pos >= n:
        return n
    prev, j = None, pos - 1
    while prev is None and j >= 0:
        prev, j = key(rows.get(j)), j - 1
    if prev is None:
        return pos
    for q in range(pos, n):
        k = key(rows.get(q))
        if k is not None and k != prev:
            return q
    return n


def _parquet_share(rows, shard, key):
    """The values of shard (index, count) of a Parquet list."""
    index, count = shard
    n = len(rows)
    start = row_cut(rows, index * n // count, key)
    end = row_cut(rows, (index + 1) * n // count, key)
    return (rows.get(i) for i in range(start, end))


def import_pyarrow(path):
    """pyarrow.parquet, or a ConfigError naming the extra that installs it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"input: '{path}' is a Parquet list, which needs pyarrow; {PARQUET_EXTRA}") from None
    return pq


def _open(path, options, stats, parquet=False):
    """The list file opened for binary reading: a local file, or an object read by ranged GETs (_Ranged for a
    text list; for Parquet, an fsspec file reading blocks of _URL_BLOCK)."""
    try:
        if not storage.is_url(path):
            return open(path, "rb")
        fs, key = storage.filesystem(path, options), storage.strip(path)
        if parquet:
            return fs.open(key, "rb", block_size=_URL_BLOCK, cache_type="readahead")
        return _Ranged(fs, key, fs.size(key), stats)
    except FileNotFoundError:
        raise ConfigError(f"input: list '{path}' does not exist; set input to a list file or a folder") from None
    except OSError as exc:
        raise StorageError(getattr(exc, "errno", None), f"cannot read input list: {exc}", str(path)) from None


def _size(f):
    """The size of an open file in bytes."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    return size


def _below(rel, prefixes):
    """Whether id rel lies below one of the folder ids in prefixes ('out/')."""
    return any(rel.startswith(p) for p in prefixes)


def _output_ids(config, root):
    """The folder ids ('out/') of the current output when it lies below root, so its files are never inputs."""
    out = config.output if storage.is_url(config.output) else os.path.abspath(config.output)
    rel, _, error = locate(out, root)
    return () if error or rel in ("", ".") else (rel + "/",)


def list_sources(values, root, skip_ids, stats):
    """The Sources of list entries (one job's share), deduplicated, with output names, sorted by id."""
    found, errors = {}, {}
    for value in values:
        text = _text(value)
        if not text or text.startswith("#"):
            continue
        rel, path, error = locate(text, root)
        if error:
            shown = outside_id(text)
            errors.setdefault(shown, Source(text, shown, "", f"'{text}': {error}"))
            continue
        if rel in found:
            continue  # listed twice
        found[rel] = path
    by_folder = {}
    for rel in found:
        name = posixpath.basename(rel)
        if any(part.startswith(".") for part in rel.split("/")):
            stats.add("hidden")
        elif _below(rel, skip_ids):
            stats.add("output_folder")
        elif not is_image_name(name):
            stats.add("needs_heif" if needs_extra(name) else "not_image", rel)
        else:
            by_folder.setdefault(posixpath.dirname(rel), []).append(name)
    out = list(errors.values())
    for folder, names in by_folder.items():
        prefix = folder + "/" if folder else ""
        for name, out_name in output_names(sorted(names)).items():
            out.append(Source(found[prefix + name], prefix + name, prefix + out_name))
    out.sort(key=lambda src: src.rel)
    return out


def _read_share(config, shard, key, stats):
    """The entries of this job's share of the list config.input (text lines as bytes, Parquet values)."""
    if config.input.lower().endswith(".parquet"):
        pq = import_pyarrow(config.input)
        with _open(config.input, config.storage_options, stats, parquet=True) as f:
            try:
                pf = pq.ParquetFile(f)
            except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise ConfigError(f"input: '{config.input}' is not a Parquet file ({exc})") from None
            if config.input_column not in pf.schema_arrow.names:
                raise ConfigError(f"input_column: '{config.input_column}' is not a column of '{config.input}' "
                                  f"(it has {', '.join(pf.schema_arrow.names)}); set input_column")
            values = list(_parquet_share(_Rows(pf, config.input_column, stats), shard, key))
            stats.bytes_fetched += _fetched(f)
            return values
    with _open(config.input, config.storage_options, stats) as raw:
        return list(_text_share(_Counted(raw, stats), _size(raw), shard, key))


def _fetched(f):
    """The bytes an fsspec file's ranged GETs brought (0 for a local file)."""
    return getattr(getattr(f, "cache", None), "total_requested_bytes", 0) or 0


def scan_list(config, shard=(0, 1), stats=None):
    """Yield this job's Sources of the input list config.input, sorted by id; stats gets what the job read."""
    stats = stats if stats is not None else ScanStats()
    root = root_of(config)
    stats.partial = shard[1] > 1

    def key(value):
        return folder_key(value, root)

    try:
        values = _read_share(config, shard, key, stats)
    except (ConfigError, StorageError):
        raise
    except OSError as exc:  # the list's storage failed mid-read: like any other storage error, exit 4
        raise StorageError(getattr(exc, "errno", None), f"cannot read input list: {exc}", str(config.input)) from None
    for src in list_sources(values, root, _output_ids(config, root), stats):
        stats.found += 1
        yield src
