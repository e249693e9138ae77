"""Opening a user's text file safely: regular files only, text encodings only, every failure one clear line."""

from __future__ import annotations

import codecs
import errno
import os
import stat
from pathlib import Path
from typing import Iterator

from .errors import RNNStudioError

CHUNK_BYTES = 1 << 20  # read files 1 MB at a time, so big corpora stream
# Codecs that decode bytes to str but are not file encodings (domain names, escapes, the always-failing one).
NOT_FILE_ENCODINGS = {"punycode", "idna", "undefined", "unicode-escape", "raw-unicode-escape"}
# Codecs in which U+0000 comes only from a 0x00 byte (strict UTF-8 refuses the overlong C0 80), so the byte
# check below already finds every NUL and the decoded text need not be scanned again (~10% of a char encode).
_NUL_BYTE_IS_NUL_CHAR = frozenset({"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252"})
_BOM_CODECS = {"utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
               "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)}


def check_text_encoding(encoding: str) -> codecs.CodecInfo:
    """The codec of a text encoding; unknown names and bytes-to-bytes or str-to-str codecs are refused."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        raise RNNStudioError(f"unknown encoding {encoding!r}; try utf-8, latin-1 or cp1252") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_FILE_ENCODINGS:
        raise RNNStudioError(f"{encoding!r} is not a text encoding (it does not turn a file's bytes into text); "
                             f"try utf-8, latin-1 or cp1252")
    return info


def _os_error(path, exc: OSError, what: str) -> RNNStudioError:
    if exc.errno == errno.ELOOP:
        return RNNStudioError(f"{path}: a symbolic link loop (links that lead back to themselves); "
                              f"fix or remove the link")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return RNNStudioError(f"{path}: no such {what}; check the path")
    if exc.errno == errno.EACCES or isinstance(exc, PermissionError):
        return RNNStudioError(f"{path}: permission denied; check the {what}'s permissions")
    if exc.errno == errno.ENAMETOOLONG:
        return RNNStudioError(f"{path}: the path is too long")
    return RNNStudioError(f"{path}: cannot read it ({exc.strerror or exc})")


def _not_regular(path, mode: int) -> RNNStudioError:
    if stat.S_ISFIFO(mode):
        return RNNStudioError(f"{path}: is a pipe (FIFO), not a file; RNN Studio reads a text more than once, so "
                              f"save it to a regular file first (for example: cat > corpus.txt)")
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return RNNStudioError(f"{path}: is {kind}; give a regular text file or a folder of .txt files")


def check_user_path(path, *, folders: bool = False) -> os.stat_result:
    """``stat`` of a path the user gave: it must exist and be a regular file (or a folder, when allowed)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError):  # an embedded NUL
            raise RNNStudioError(f"{str(path)!r}: not a valid path") from None
        raise _os_error(path, exc, "file or folder" if folders else "file") from None
    if stat.S_ISDIR(st.st_mode):
        if not folders:
            raise RNNStudioError(f"{path}: is a folder; give a text file")
    elif not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return st


def text_files(folder, pattern: str = ".txt") -> list[Path]:
    """Every ``*.txt`` regular file under ``folder``, sorted. A folder that cannot be read is an error naming it."""
    found: list[Path] = []

    def fail(exc: OSError):
        raise _os_error(exc.filename or folder, exc, "folder")

    for root, dirs, files in os.walk(folder, onerror=fail):
        dirs.sort()
        for name in files:
            if not name.endswith(pattern):
                continue
            path = Path(root) / name
            try:
                st = os.stat(path)
            except OSError as exc:
                raise _os_error(path, exc, "file") from None
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path, st.st_mode)
            found.append(path)
    return sorted(found)


def _open_regular(path):
    """A binary file object; never blocks on a FIFO swapped in after the check (O_NONBLOCK, then fstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError):
            raise RNNStudioError(f"{str(path)!r}: not a valid path") from None
        raise _os_error(path, exc, "file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text_chunks(path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[str]:
    """Yield the text of the regular file ``path`` in pieces; bad bytes raise an error naming the file and offset."""
    info = check_text_encoding(encoding)
    if errors not in ("strict", "replace"):
        raise RNNStudioError(f"errors must be strict or replace, got {errors!r}")
    decoder = info.incrementaldecoder(errors)
    # In ASCII-compatible encodings a NUL byte means binary data; UTF-16/32 text is full of them.
    nul_is_binary = not info.name.startswith(("utf-16", "utf-32"))
    boms = _BOM_CODECS.get(info.name)
    fed = 0
    with _open_regular(path) as fh:
        while True:
            try:
                data = fh.read(CHUNK_BYTES)
            except OSError as exc:
                raise RNNStudioError(f"{path}: cannot read it ({exc.strerror or exc})") from None
            if boms and fed == 0 and data and not data.startswith(boms):
                le = info.name + "-le"
                raise RNNStudioError(f"{path}: {encoding} text must start with a byte-order mark and this file has "
                                     f"none; name the byte order: {le} or {info.name}-be")
            pending = len(decoder.getstate()[0]) if hasattr(decoder, "getstate") else 0
            nul = data.find(b"\x00") if nul_is_binary else -1
            if nul != -1:  # checked before decoding: a binary file is rarely valid text up to its first NUL
                raise RNNStudioError(
                    f"{path}: looks like a binary file (NUL byte at byte offset {fed + nul}); "
                    f"pick a plain text file, or set encoding=utf-16 if it is UTF-16 text")
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                offset = max(fed - pending + exc.start, 0)
                raise RNNStudioError(
                    f"{path}: invalid {encoding} at byte offset {offset}; "
                    f"set the encoding option to the file's real encoding (e.g. encoding=latin-1: "
                    f"--corpus-opt encoding=latin-1 for train, --encoding latin-1 for score), "
                    f"or errors=replace to substitute U+FFFD for bad bytes") from None
            except (UnicodeError, ValueError, TypeError) as exc:  # a codec that fails in its own way
                raise RNNStudioError(f"{path}: cannot decode it as {encoding} ({exc}); try utf-8 or latin-1") from None
            if info.name not in _NUL_BYTE_IS_NUL_CHAR and "\x00" in text:
                offset = fed - pending + len(text[: text.index("\x00")].encode(encoding, "replace"))
                raise RNNStudioError(
                    f"{path}: looks like a binary file (NUL byte near byte offset {offset}); "
                    f"pick a plain text file, or set encoding=utf-16 if it is UTF-16 text")
            fed += len(data)
            if text:
                yield text
            if not data:
                break


def read_text_file(path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The whole text of a regular file, checked as ``read_text_chunks`` checks it."""
    check_user_path(path)
    return "".join(read_text_chunks(path, encoding, errors))
