"""Reliability, text inputs: the real CLI in a subprocess on hostile text files, encodings, homes and sizes.

Each case checks the exit code (2 for a user's mistake), that stderr is one line with no traceback, and that
nothing was lost or left behind. A hang shows up as the subprocess timeout. Each fault class runs the real
CLI in a subprocess at least once; its further variants run ``cli.main`` in-process, to keep the suite fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import one_line_error
from local_http import QuietHandler, serving
from tiny_models import train_on_file

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TINY_TRAIN = ["--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--max-steps", "1", "--eval-every", "0",
              "--device", "cpu", "--threads", "1"]
TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 40


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An RNN Studio home with one small saved model, ``m``."""
    home = tmp_path_factory.mktemp("home")
    corpus = home / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:  # a module-scoped fixture cannot use ``monkeypatch``
        mp.setenv("RNNSTUDIO_HOME", str(home))
        train_on_file(corpus, "m", cell="gru", hidden_size=8, batch_size=2, seq_len=8, max_steps=2, eval_every=0,
                      checkpoint_every=0, seed=0, threads=1)
    return home


def run(args, home, *, input=None, code=None, timeout=120):
    env = {**os.environ, "RNNSTUDIO_HOME": str(home)}
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "rnnstudio", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, input=input, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def user_error(proc, *must_contain) -> str:
    """Exit 2, one line on stderr that names the problem, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert err.startswith("rnnstudio: error: ") and "\n" not in err and "Traceback" not in err, err
    for text in must_contain:
        assert text in err, err
    return err


@pytest.fixture
def in_home(home, monkeypatch):
    """In-process CLI calls see the module's home (and its model ``m``)."""
    monkeypatch.setenv("RNNSTUDIO_HOME", str(home))
    return home


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


# -- encodings ----------------------------------------------------------------------------------------

def test_score_refuses_codecs_that_are_not_text_encodings(home, in_home, tmp_path, capsys):
    sample = tmp_path / "s.txt"
    sample.write_text("the cat sat", encoding="utf-8")
    user_error(run(["score", "--model", "m", str(sample), "--encoding", "rot13"], home),
               "'rot13'", "not a text encoding", "utf-8")
    for encoding in ("base64", "zlib", "hex", "uu", "punycode", "bz2", "idna"):
        one_line_error(capsys, ["score", "--model", "m", str(sample), "--encoding", encoding],
                       repr(encoding), "not a text encoding")


def test_train_refuses_a_codec_that_is_not_a_text_encoding(home, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    before = files_under(home)
    user_error(run(["train", "--corpus", "text-file", "--corpus-opt", f"path={corpus}", "--corpus-opt",
                    "encoding=rot13", *TINY_TRAIN, "--name", "rot"], home), "not a text encoding")
    assert files_under(home) == before


def test_utf16_without_a_byte_order_mark_names_the_byte_orders(home, in_home, tmp_path, capsys):
    from rnnstudio.cli import main

    sample = tmp_path / "s.txt"
    sample.write_bytes("the cat sat on the mat".encode("utf-16-le"))
    user_error(run(["score", "--model", "m", str(sample), "--encoding", "utf-16"], home),
               "byte-order mark", "utf-16-le", "utf-16-be")
    sample.write_bytes("the cat sat on the mat".encode("utf-32-be"))
    one_line_error(capsys, ["score", "--model", "m", str(sample), "--encoding", "utf-32"], "utf-32-le")
    for encoding in ("utf-16", "utf-32", "utf-16-le"):  # with a BOM, or a named byte order, it is read
        sample.write_bytes("the cat sat on the mat".encode(encoding))
        assert main(["score", "--model", "m", str(sample), "--encoding", encoding]) == 0
        assert "perplexity" in capsys.readouterr().out


# -- paths that are not regular files -------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs POSIX FIFOs")
    path = tmp_path / "corpus.txt"
    os.mkfifo(path)
    return path


def test_a_fifo_as_corpus_is_refused_not_waited_on(fifo, home):
    """Opening a FIFO for reading blocks until a writer comes: every reader must refuse it first."""
    user_error(run(["score", "--model", "m", str(fifo)], home, timeout=60), str(fifo), "is a pipe (FIFO)")
    user_error(run(["train", "--corpus", "text-file", "--corpus-opt", f"path={fifo}", *TINY_TRAIN,
                    "--name", "fifo"], home, timeout=60), "is a pipe (FIFO)", "regular file")
    assert not (home / "data" / "models" / "fifo").exists()


def test_a_fifo_among_the_txt_files_of_a_corpus_folder_is_refused(fifo, home):
    (fifo.parent / "real.txt").write_text(TEXT, encoding="utf-8")
    user_error(run(["train", "--corpus", "text-file", "--corpus-opt", f"path={fifo.parent}", *TINY_TRAIN,
                    "--name", "fifo2"], home, timeout=60), str(fifo), "is a pipe")


def test_a_fifo_as_the_gui_settings_file_is_ignored_with_a_warning(fifo, home):
    """The app reads its settings at start-up: a FIFO there must not block the start."""
    code = ("import sys, warnings; warnings.simplefilter('ignore'); from pathlib import Path; "
            "from rnnstudio.gui.settings import load_settings; "
            "data, message = load_settings(Path(sys.argv[1])); print(data, message)")
    proc = run([str(fifo)], home, code=code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("{} ") and "is a pipe" in proc.stdout


def test_a_corpus_piped_to_dev_stdin_is_called_a_pipe(home):
    if not Path("/dev/stdin").exists():
        pytest.skip("no /dev/stdin")
    err = user_error(run(["score", "--model", "m", "/dev/stdin"], home, input="the cat sat on the mat\n"),
                     "/dev/stdin", "is a pipe", "save it to a regular file")
    assert "empty" not in err


def test_a_symlink_loop_is_called_a_loop_not_missing(home, in_home, tmp_path, capsys):
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    err = user_error(run(["score", "--model", "m", str(loop)], home), "symbolic link loop")
    assert "no such" not in err
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(TEXT, encoding="utf-8")
    (folder / "b.txt").symlink_to(folder / "c.txt")
    (folder / "c.txt").symlink_to(folder / "b.txt")
    one_line_error(capsys, ["train", "--corpus", "text-file", "--corpus-opt", f"path={folder}", *TINY_TRAIN,
                            "--name", "loops"], "b.txt", "symbolic link loop")


# An unreadable subfolder. root reads anything, so as root the same error comes from the operating system's
# answer being replaced (os.scandir raising EACCES for that folder) in the real CLI process.
_SCANDIR_DENIED = """
import errno, os, sys
real = os.scandir
def scandir(path="."):
    if os.path.basename(os.fspath(path)) == "locked":
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
    return real(path)
os.scandir = scandir
from rnnstudio.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_unreadable_subfolder_of_a_corpus_folder_is_named_not_skipped(home, tmp_path):
    folder = tmp_path / "texts"
    (folder / "locked").mkdir(parents=True)
    (folder / "a.txt").write_text(TEXT, encoding="utf-8")
    (folder / "locked" / "b.txt").write_text(TEXT, encoding="utf-8")
    args = ["train", "--corpus", "text-file", "--corpus-opt", f"path={folder}", *TINY_TRAIN, "--name", "locked"]
    if ROOT:
        proc = run(args, home, code=_SCANDIR_DENIED)
    else:
        (folder / "locked").chmod(0)
        try:
            proc = run(args, home)
        finally:
            (folder / "locked").chmod(0o755)
    user_error(proc, str(folder / "locked"), "permission denied")
    assert not (home / "data" / "models" / "locked").exists()


# -- the home folder ------------------------------------------------------------------------------------

def test_a_home_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.write_text("not a folder", encoding="utf-8")
    user_error(run(["train", *TINY_TRAIN, "--name", "x"], home), "RNNSTUDIO_HOME", "not a folder")
    monkeypatch.setenv("RNNSTUDIO_HOME", str(home))
    for command in (["models"], ["runs"], ["generate", "--model", "m"]):
        one_line_error(capsys, command, "RNNSTUDIO_HOME", "not a folder")
    assert home.read_text(encoding="utf-8") == "not a folder"


# -- generation sizes and numbers ------------------------------------------------------------------------

def test_a_tiny_temperature_samples_the_most_likely_token(home, in_home, capsys):
    """As T -> 0 sampling becomes argmax: the text equals --greedy's, with no inf/nan error."""
    from rnnstudio.cli import main

    common = ["generate", "--model", "m", "--prefix", "the ", "--length", "30", "--seed", "3"]
    assert main([*common, "--greedy"]) == 0
    greedy = capsys.readouterr().out
    assert len(greedy.strip()) > len("the ")
    proc = run([*common, "--temperature", "1e-45"], home)
    assert proc.returncode == 0 and proc.stdout == greedy, proc.stderr
    for temperature in ("1e-300", "5e-324", "1e-31"):
        assert main([*common, "--temperature", temperature]) == 0
        assert capsys.readouterr().out == greedy, temperature


def test_a_seed_beyond_64_bits_is_refused(home, in_home, capsys):
    user_error(run(["generate", "--model", "m", "--seed", str(10**23)], home), "--seed", str(10**23))
    one_line_error(capsys, ["train", *TINY_TRAIN, "--seed", str(10**23), "--name", "seed"], "--seed")
    assert not (home / "data" / "models" / "seed").exists()


def test_samples_that_cannot_fit_are_refused_before_allocating(home, in_home, capsys):
    user_error(run(["generate", "--model", "m", "--samples", "1000000000"], home),
               "1,000,000,000 samples", "GB", "fewer samples")
    one_line_error(capsys, ["generate", "--model", "m", "--samples", "3000000", "--length", "1000000"],
                   "3,000,000 samples", "GB")
    one_line_error(capsys, ["generate", "--model", "m", "--samples", "3000000", "--length", "1000000", "--json"],
                   "3,000,000 samples")


# -- the Time Machine download ---------------------------------------------------------------------------

@pytest.fixture
def short_server():
    """A server on 127.0.0.1 that promises 100,000 bytes and sends 1,000, then closes."""
    class Handler(QuietHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"The Time Machine " * 58 + b"!!!!!!!!!!!!!!")
            self.wfile.flush()
            self.close_connection = True

    with serving(Handler) as url:
        yield f"{url}/timemachine.txt"


def test_a_cut_off_download_says_so_keeps_nothing_and_says_to_retry(short_server, tmp_path):
    home = tmp_path / "home"
    err = user_error(run(["train", "--corpus", "time-machine", "--corpus-opt", f"url={short_server}", *TINY_TRAIN,
                          "--name", "tm"], home), "cut off", "1,000 of 100,000 bytes", "nothing was saved",
                     "Try again")
    assert "IncompleteRead" not in err and "plugin raised" not in err
    assert not (home / "cache").exists() or files_under(home / "cache") == set()
    assert not (home / "data" / "models" / "tm").exists()
