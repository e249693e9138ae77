"""Built-in corpora: Python's own docs (offline default), your text files, and d2l's Time Machine."""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

import rnnstudio
from rnnstudio import Corpus, Param, RNNStudioError


class PythonDocsCorpus(Corpus):
    name = "python-docs"
    description = "The Python standard library's documentation topics (pydoc_data); offline, on every Python."
    params = ()

    def read(self) -> str:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key].strip() for key in sorted(topics))

    def describe_source(self) -> str:
        return "pydoc_data.topics"

    def fingerprint(self):
        import pydoc_data.topics

        return rnnstudio.files_fingerprint([pydoc_data.topics.__file__])


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
        rnnstudio.check_text_encoding(self.options["encoding"])
        self.path = Path(raw)
        st = rnnstudio.check_user_path(self.path, folders=True)  # no FIFOs, devices or symlink loops
        if stat.S_ISDIR(st.st_mode):
            self.files = rnnstudio.text_files(self.path)  # an unreadable subfolder is an error naming it
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
            for piece in rnnstudio.read_text_chunks(f, self.options["encoding"], self.options["errors"]):
                if not seen_text and piece.strip():
                    seen_text = True
                yield piece
        if not seen_text:
            what = "the file is" if len(self.files) == 1 else "all the files are"
            raise RNNStudioError(f"{self.path}: {what} empty or only whitespace; give it some text")

    def describe_source(self) -> str:
        return str(self.path)

    def fingerprint(self):
        return rnnstudio.files_fingerprint(self.files)


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
        except http.client.IncompleteRead as exc:  # the server closed early: short of its Content-Length
            got, missing = len(exc.partial), exc.expected
            expected = f" of {got + missing:,}" if isinstance(missing, int) else ""
            raise RNNStudioError(
                f"the download of The Time Machine from {url} was cut off after {got:,}{expected} bytes; "
                f"nothing was saved. Try again, or use --corpus-opt path=FILE with a local copy"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RNNStudioError(
                f"could not download The Time Machine from {url} ({reason}); nothing was saved. Check your "
                f"connection and try again, or use --corpus-opt path=FILE with a local copy"
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
            return strip_gutenberg(rnnstudio.read_text_file(Path(self.options["path"])))
        return self.fetch().read_text(encoding="utf-8")

    def describe_source(self) -> str:
        return self.options["path"] or self.options["url"]

    def fingerprint(self):
        path = Path(self.options["path"]) if self.options["path"] else self.cache_file()
        return rnnstudio.files_fingerprint([path]) if path.is_file() else None  # not downloaded yet: no cache


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@rnnstudio.hookimpl
def register_corpora(register):
    register(PythonDocsCorpus)
    register(TextFileCorpus)
    register(TimeMachineCorpus)
