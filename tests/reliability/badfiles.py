"""Hostile and broken data files, made on the spot by the tests that need them.

Every maker writes under ``data`` (the service's data directory) and returns
the ``file:`` reference a client would send. Nothing here is large on disk:
the bombs are small files that declare or expand to large things.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format


def table(rows: int = 40, features: int = 4, classes: int = 2, seed: int = 0):
    """A small, valid table: (x, y)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = np.arange(rows) % classes
    return x, y


def valid_npz(path: Path) -> Path:
    x, y = table()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


def npz_with(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def npy_bytes(array_header: dict, payload: bytes = b"") -> bytes:
    """A ``.npy`` file: a header declaring ``array_header``, then ``payload``."""
    out = io.BytesIO()
    npy_format.write_array_header_1_0(out, array_header)
    return out.getvalue() + payload


def header_bomb_npz(path: Path) -> Path:
    """~300 bytes whose ``x`` declares 2³² float64 values: 32 GiB."""
    x = npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (2**32, 1)}, b"\0" * 8
    )
    y = io.BytesIO()
    np.save(y, np.array([0, 1]))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", x)
        archive.writestr("y.npy", y.getvalue())
    return path


def header_bomb_npy(path: Path) -> Path:
    """A lone ``.npy`` of 136 bytes declaring a 32 GiB array."""
    path.write_bytes(
        npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (2**32,)})
    )
    return path


def zip_bomb_npz(path: Path, megabytes: int = 256) -> Path:
    """An ``.npz`` whose ``x`` deflates from a few hundred KiB to ``megabytes``."""
    rows = megabytes * 1024**2 // 8
    header = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (rows, 1)})
    zeros = b"\0" * 1024**2
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(header)
            for _ in range(megabytes):
                member.write(zeros)
        labels = {"descr": "<i8", "fortran_order": False, "shape": (rows,)}
        archive.writestr("y.npy", npy_bytes(labels))
    return path


def many_entries_npz(path: Path, entries: int = 5000) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(entries):
            archive.writestr(f"a{i}.npy", b"")
    return path


class _OpensAFile:
    """Unpickling this opens (creates) ``marker``: code run by a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickle_npz(path: Path, marker: Path) -> Path:
    """An ``.npz`` whose ``x`` is an object array that runs code when loaded."""
    x = np.empty(4, dtype=object)
    x[:] = [_OpensAFile(marker)] * 4
    np.savez(path, x=x, y=np.array([0, 1, 0, 1]))
    return path


def pickle_npy(path: Path, marker: Path) -> Path:
    x = np.empty(2, dtype=object)
    x[:] = [_OpensAFile(marker)] * 2
    np.save(path, x, allow_pickle=True)
    return path


def raw_pickle(path: Path, marker: Path) -> Path:
    """A plain pickle under a data file's name."""
    import pickle

    path.write_bytes(pickle.dumps(_OpensAFile(marker)))
    return path


def text(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


def not_a_zip(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is not an archive" * 10)
    return path
