"""The time-machine corpus downloads from a URL, checks SHA-1, and never leaves a partial file (local server only)."""

from __future__ import annotations

import hashlib

import pytest

from local_http import QuietHandler, serving
from rnnstudio.errors import RNNStudioError
from rnnstudio.plugins import load_plugins

BOOK = b"The Time Machine, by H. G. Wells [1898]\n\n\nI\n\nThe Time Traveller (for so it will be convenient)\n" * 20


@pytest.fixture
def server():
    class Handler(QuietHandler):
        def do_GET(self):
            if self.path == "/timemachine.txt":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BOOK)))
                self.end_headers()
                self.wfile.write(BOOK)
            else:
                self.send_error(404)

    with serving(Handler) as url:
        yield url


def _corpus(**opts):
    return load_plugins(no_plugins=True).corpus("time-machine")(**opts)


def test_download_verify_and_cache(server, rnnstudio_home):
    sha1 = hashlib.sha1(BOOK).hexdigest()
    corpus = _corpus(url=f"{server}/timemachine.txt", sha1=sha1)
    assert corpus.read() == BOOK.decode()
    cached = rnnstudio_home / "cache" / "timemachine.txt"
    assert cached.read_bytes() == BOOK
    # second use reads the cache: works even when the server is unreachable
    again = _corpus(url="http://127.0.0.1:9/none", sha1=sha1)
    assert again.read() == BOOK.decode()


def test_checksum_mismatch_is_a_clear_error_and_saves_nothing(server, rnnstudio_home):
    corpus = _corpus(url=f"{server}/timemachine.txt", sha1="0" * 40)
    with pytest.raises(RNNStudioError, match="SHA-1"):
        corpus.read()
    cache = rnnstudio_home / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_is_a_clear_error(server, rnnstudio_home):
    for url in (f"{server}/missing.txt", "http://127.0.0.1:9/timemachine.txt"):
        with pytest.raises(RNNStudioError, match="could not download"):
            _corpus(url=url).read()
    cache = rnnstudio_home / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_default_settings_match_d2l():
    cls = load_plugins(no_plugins=True).corpus("time-machine")
    opts = cls.resolve_options({})
    assert opts["url"] == "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
    assert opts["sha1"] == "090b5e7e70c295757f55df93cb0a180b9691891a"
    assert cls.default_preprocess == "d2l"


def test_local_gutenberg_copy_is_stripped(tmp_path):
    path = tmp_path / "tm.txt"
    path.write_text("Header\n*** START OF THE PROJECT GUTENBERG EBOOK ***\nThe Time Traveller\n*** END OF IT ***\nlicence")
    assert _corpus(path=str(path)).read().strip() == "The Time Traveller"
