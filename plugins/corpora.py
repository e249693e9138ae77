"""Built-in corpora: Python's own docs (offline default), your text files, and d2l's Time Machine."""

from __future__ import annotations

import codecs
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import rnnstudio
from rnnstudio import Corpus, Param, RNNStudioError

CHUNK_BYTES = 1 << 20  # read files 1 MB at a time, so big corpora stream


class PythonDocsCorpus(Corpus):
    name = "python-docs"
    description = "The Python standard library's documentation topics (pydoc_data); offline, on every Python."
    params = ()

    def read(self) -> str:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key].strip() for key in sorted(topics))

    def describe_source(self) -> str:
        return "pydoc_data.topics"


def _decode_file(path: Path, encoding: str, errors: str):
    """Yield the text of ``path`` in pieces; bad bytes raise an error naming the file and byte offset."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors)
    except LookupError:
        raise RNNStudioError(f"unknown encoding {encoding!r}; try utf-8, latin-1 or cp1252") from None
    # In ASCII-compatible encodings a NUL byte means binary data; UTF-16/32 text is full of them.
    nul_is_binary = not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    fed = 0
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise RNNStudioError(f"{path}: file not found; check the path option") from None
    except PermissionError:
        raise RNNStudioError(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise RNNStudioError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with fh:
        while True:
            try:
                data = fh.read(CHUNK_BYTES)
            except OSError as exc:
                raise RNNStudioError(f"{path}: cannot read it ({exc.strerror or exc})") from None
            pending = len(decoder.getstate()[0])
            nul = data.find(b"\x00") if nul_is_binary else -1
            if nul != -1:  # checked before decoding: a binary file is rarely valid text up to its first NUL
                raise RNNStudioError(
                    f"{path}: looks like a binary file (NUL byte at byte offset {fed + nul}); "
                    f"pick a plain text file, or set encoding=utf-16 if it is UTF-16 text"
                )
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                offset = fed - pending + exc.start
                raise RNNStudioError(
                    f"{path}: invalid {encoding} at byte offset {offset}; "
                    f"set the encoding option to the file's real encoding (e.g. encoding=latin-1: "
                    f"--corpus-opt encoding=latin-1 for train, --encoding latin-1 for score), "
                    f"or errors=replace to substitute U+FFFD for bad bytes"
                ) from None
            if "\x00" in text:
                offset = fed - pending + len(text[: text.index("\x00")].encode(encoding, "replace"))
                raise RNNStudioError(
                    f"{path}: looks like a binary file (NUL byte near byte offset {offset}); "
                    f"pick a plain text file, or set encoding=utf-16 if it is UTF-16 text"
                )
            fed += len(data)
            if text:
                yield text
            if not data:
                break


class TextFileCorpus(Corpus):
    name = "text-file"
    description = "Your own text: one file, or every .txt file in a folder."
    params = (
        Param("path", "path", None, help="A text file, or a folder of .txt files (searched recursively)."),
        Param("encoding", "str", "utf-8", help="The files' text encoding, for example utf-8, latin-1, cp1252."),
        Param("errors", "choice", "strict", choices=("strict", "replace"),
              help="strict stops at the first undecodable byte; replace substitutes U+FFFD."),
    )

    def __init__(self, **options):
        super().__init__(**options)
        raw = self.options["path"]
        if not raw:
            raise RNNStudioError("text-file needs a path: --corpus-opt path=FILE_OR_FOLDER")
        self.path = Path(raw)
        if not self.path.exists():
            raise RNNStudioError(f"{self.path}: no such file or folder; check the path option")
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*.txt") if p.is_file())
            if not self.files:
                raise RNNStudioError(f"{self.path}: the folder has no .txt files; add some or point path at a file")
        else:
            self.files = [self.path]
        for f in self.files:
            if not os.access(f, os.R_OK):
                raise RNNStudioError(f"{f}: permission denied; check the file's permissions")

    def iter_text(self):
        seen_text = False
        for i, f in enumerate(self.files):
            if i:
                yield "\n\n"
            for piece in _decode_file(f, self.options["encoding"], self.options["errors"]):
                if not seen_text and piece.strip():
                    seen_text = True
                yield piece
        if not seen_text:
            what = "the file is" if len(self.files) == 1 else "all the files are"
            raise RNNStudioError(f"{self.path}: {what} empty or only whitespace; give it some text")

    def describe_source(self) -> str:
        return str(self.path)


TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and licence footer, if the text has them."""
    start = text.find("*** START OF")
    if start != -1:
        text = text[text.find("\n", start) + 1:]
    end = text.find("*** END OF")
    if end != -1:
        text = text[:end]
    return text.lstrip("\ufeff")


class TimeMachineCorpus(Corpus):
    name = "time-machine"
    description = "H. G. Wells' The Time Machine, as the d2l book uses it (downloaded once, SHA-1 checked)."
    default_preprocess = "d2l"
    sample_prefix = "time traveller"
    params = (
        Param("url", "str", TIME_MACHINE_URL, help="Where to download the d2l copy from."),
        Param("sha1", "str", TIME_MACHINE_SHA1, help="Expected SHA-1 of the download."),
        Param("path", "path", None, help="Use a local copy instead of downloading (Gutenberg boilerplate is removed)."),
    )

    def cache_file(self) -> Path:
        return rnnstudio.cache_dir() / "timemachine.txt"

    def fetch(self) -> Path:
        """The cached copy, downloaded and verified on first use."""
        target = self.cache_file()
        if target.exists() and _sha1(target.read_bytes()) == self.options["sha1"]:
            return target
        url = self.options["url"]
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                data = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RNNStudioError(
                f"could not download The Time Machine from {url} ({reason}); check your connection, "
                f"or use --corpus-opt path=FILE with a local copy"
            ) from None
        digest = _sha1(data)
        if digest != self.options["sha1"]:
            raise RNNStudioError(
                f"the download from {url} has SHA-1 {digest}, expected {self.options['sha1']}; "
                f"nothing was saved. Try again later or use --corpus-opt path=FILE"
            )
        rnnstudio.atomic_write_bytes(target, data)
        return target

    def read(self) -> str:
        if self.options["path"]:
            path = Path(self.options["path"])
            try:
                return strip_gutenberg(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise RNNStudioError(f"{path}: cannot read The Time Machine from it ({exc})") from None
        return self.fetch().read_text(encoding="utf-8")

    def describe_source(self) -> str:
        return self.options["path"] or self.options["url"]


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@rnnstudio.hookimpl
def register_corpora(register):
    register(PythonDocsCorpus)
    register(TextFileCorpus)
    register(TimeMachineCorpus)
