"""Checks on files that come from users, made before anything is read.

Every data set reference of the ``file:`` scheme, and every file a loader
opens, passes through here:

* :func:`resolve_inside` turns a reference into a path that stays under the
  data directory (no absolute paths, ``..`` components, NUL bytes,
  percent-encoded separators or dots, or symlinks that lead out of it);
* :func:`check_file_size` caps the size of a file on disk;
* :func:`check_tree` walks a folder (an ImageFolder data set) without
  following symlinked folders, capping its file count and file sizes;
* :func:`check_npz` reads only the zip directory and each member's ``.npy``
  header, so object (pickled) arrays, absurd declared shapes, too many entries
  and zip bombs are refused before a single array is allocated.

Every refusal is a :class:`~engine.errors.DataError` about ``dataset.uri``.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from engine.errors import DataError
from engine.specs import Limits

#: most members an ``.npz`` archive may hold (a data set needs two: ``x``, ``y``)
MAX_NPZ_ENTRIES = 64
#: most a member may expand when decompressed (uncompressed / compressed size)
MAX_EXPANSION_RATIO = 200
#: members smaller than this are not held to the expansion ratio
RATIO_FLOOR_BYTES = 1024**2
#: most files a data set folder may hold
MAX_TREE_FILES = 5_000_000
#: longest ``.npy`` header accepted (numpy's own default limit)
MAX_NPY_HEADER_BYTES = 10_000

_FIELD = "dataset.uri"
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_DANGEROUS_ESCAPES = frozenset(".\\/\x00")


@dataclass(frozen=True)
class ArrayHeader:
    """What an ``.npy`` header declares, read without reading the array."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes the array would take once loaded."""
        return math.prod(self.shape) * self.dtype.itemsize


def resolve_inside(data_dir: Path, relative: str) -> Path:
    """Return the real path of ``relative`` under ``data_dir``.

    Refuses empty, absolute and NUL-containing references, ``..`` components
    (with ``/`` or ``\\`` as separator), percent escapes that decode to a dot,
    a separator or NUL (``%2e%2e%2f``), and paths whose real location, after
    following symlinks, lies outside the data directory. The path need not
    exist; callers check that.
    """
    _check_reference_text(relative)
    root = data_dir.resolve()
    try:
        resolved = (root / relative).resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise DataError(
            f"'{relative}' cannot be resolved (a symlink loop?)", field=_FIELD
        ) from error
    if not resolved.is_relative_to(root):
        raise DataError(
            f"'{relative}' leads outside the data directory (through a symlink); "
            "only files under the data directory can be used",
            field=_FIELD,
        )
    return resolved


def _check_reference_text(relative: str) -> None:
    """Refuse references that are unsafe as written, before touching the disk."""
    if not relative:
        raise DataError("the file reference is empty; use file:PATH", field=_FIELD)
    if "\x00" in relative:
        raise DataError("the file reference contains a NUL byte", field=_FIELD)
    _check_escapes(relative)
    if relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative):
        raise DataError(
            f"'{relative}' is an absolute path; give a path relative to the "
            "data directory",
            field=_FIELD,
        )
    if ".." in re.split(r"[/\\]", relative):
        raise DataError(
            f"'{relative}' contains a '..' component; give a path inside the "
            "data directory",
            field=_FIELD,
        )


def _check_escapes(relative: str) -> None:
    """Refuse percent escapes of dots, separators or NUL, however often encoded."""
    text = relative
    for _ in range(4):
        codes = [chr(int(code, 16)) for code in _ESCAPE.findall(text)]
        if any(char in _DANGEROUS_ESCAPES for char in codes):
            raise DataError(
                f"'{relative}' contains a percent-encoded dot, separator or NUL; "
                "write the path without percent escapes",
                field=_FIELD,
            )
        decoded = _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)
        if decoded == text:
            return
        text = decoded


def check_file_size(path: Path, limits: Limits, *, shown: str | None = None) -> int:
    """Return the size of ``path`` in bytes, refusing it over ``max_file_bytes``."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise DataError(
            f"'{shown or path.name}' cannot be read ({error.strerror})", field=_FIELD
        ) from error
    if size > limits.max_file_bytes:
        raise DataError(
            f"'{shown or path.name}' is {human_size(size)}, over the "
            f"{human_size(limits.max_file_bytes)} limit for a data file",
            field=_FIELD,
        )
    return size


def check_tree(folder: Path, data_dir: Path, limits: Limits) -> int:
    """Check every file under ``folder``; return how many there are.

    Symlinked folders are refused (following them could loop or leave the
    data directory), as are symlinked files that resolve outside ``data_dir``,
    files over ``limits.max_file_bytes`` and more than :data:`MAX_TREE_FILES`
    files in all.
    """
    root = data_dir.resolve()
    count = 0
    for current, dirnames, filenames in os.walk(folder):
        here = Path(current)
        for name in dirnames:
            if (here / name).is_symlink():
                raise DataError(
                    f"'{_shown(here / name, root)}' is a symlinked folder, which "
                    "is not followed; copy the images into the data directory",
                    field=_FIELD,
                )
        for name in filenames:
            path = here / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise DataError(
                    f"'{_shown(path, root)}' is a symlink that leads outside the "
                    "data directory",
                    field=_FIELD,
                )
            check_file_size(path, limits, shown=_shown(path, root))
            count += 1
            if count > MAX_TREE_FILES:
                raise DataError(
                    f"'{_shown(folder, root)}' holds more than {MAX_TREE_FILES} files",
                    field=_FIELD,
                )
    return count


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to the data directory, for messages."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def check_npz(path: Path, limits: Limits) -> dict[str, ArrayHeader]:
    """Check an ``.npz`` archive without loading it; return its members' headers.

    Refuses a file that is not a zip archive, more than :data:`MAX_NPZ_ENTRIES`
    members, members that expand more than :data:`MAX_EXPANSION_RATIO` times,
    members that are not ``.npy`` arrays, object dtypes (pickles), and declared
    sizes, alone or together, over ``limits.max_dataset_bytes``. Keys of the
    result are the array names (``x`` for ``x.npy``).
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(
            f"'{path.name}' is not a readable .npz archive ({error})", field=_FIELD
        ) from error
    with archive:
        infos = archive.infolist()
        _check_entries(path.name, infos)
        headers = {}
        for info in infos:
            header = _read_member_header(archive, info)
            headers[header.name] = header
    _check_declared_sizes(path.name, headers.values(), limits)
    return headers


def _check_entries(archive_name: str, infos: list[zipfile.ZipInfo]) -> None:
    """Cap the number of members and how much each one expands."""
    if len(infos) > MAX_NPZ_ENTRIES:
        raise DataError(
            f"'{archive_name}' has {len(infos)} entries, more than the "
            f"{MAX_NPZ_ENTRIES} allowed; a data set needs only 'x' and 'y'",
            field=_FIELD,
        )
    for info in infos:
        if info.file_size < RATIO_FLOOR_BYTES:
            continue
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > MAX_EXPANSION_RATIO:
            raise DataError(
                f"'{archive_name}' member '{info.filename}' expands {ratio:.0f} "
                f"times when decompressed, more than the {MAX_EXPANSION_RATIO} "
                "allowed (a zip bomb?); save it with np.savez, uncompressed",
                field=_FIELD,
            )


def _read_member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    """Parse one member's ``.npy`` header from the zip stream, refusing pickles."""
    name = info.filename
    if not name.endswith(".npy"):
        raise DataError(
            f"archive member '{name}' is not an .npy array; save the data with "
            "np.savez(path, x=x, y=y)",
            field=_FIELD,
        )
    try:
        with archive.open(info) as stream:
            version = npy_format.read_magic(stream)
            shape, _fortran, dtype = _read_header(stream, version)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"archive member '{name}' has no valid .npy header ({error})",
            field=_FIELD,
        ) from error
    if dtype.hasobject:
        raise DataError(
            f"array '{name[:-4]}' holds Python objects (a pickle), which are never "
            "loaded; save plain numeric arrays",
            field=_FIELD,
        )
    return ArrayHeader(name[:-4], tuple(shape), dtype)


def _read_header(stream, version: tuple[int, int]):
    """Read an ``.npy`` header of format 1.0 or 2.0 (3.0 only adds UTF-8 names)."""
    if version == (1, 0):
        return npy_format.read_array_header_1_0(
            stream, max_header_size=MAX_NPY_HEADER_BYTES
        )
    if version == (2, 0):
        return npy_format.read_array_header_2_0(
            stream, max_header_size=MAX_NPY_HEADER_BYTES
        )
    raise DataError(
        f".npy format version {version[0]}.{version[1]} is not supported; "
        "save plain numeric arrays with np.savez",
        field=_FIELD,
    )


def _check_declared_sizes(archive_name, headers, limits: Limits) -> None:
    """Refuse arrays whose declared sizes exceed the in-memory limit."""
    total = 0
    for header in headers:
        total += header.nbytes
        if header.nbytes > limits.max_dataset_bytes:
            raise DataError(
                f"array '{header.name}' in '{archive_name}' declares shape "
                f"{header.shape} of {header.dtype}, {human_size(header.nbytes)}, over "
                f"the {human_size(limits.max_dataset_bytes)} limit for a data set",
                field=_FIELD,
            )
    if total > limits.max_dataset_bytes:
        raise DataError(
            f"the arrays in '{archive_name}' declare {human_size(total)} together, "
            f"over the {human_size(limits.max_dataset_bytes)} limit for a data set",
            field=_FIELD,
        )


def human_size(size: int) -> str:
    """Format a byte count for messages (``1.5 GiB``)."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
