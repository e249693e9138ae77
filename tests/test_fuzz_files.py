"""Fuzz pass over every file RNN Studio reads back: config.json, vocab.json, train_state metadata, safetensors
headers, run records and gui-settings.json. Property: any content gives a listed-as-broken entry or a one-line
RNNStudioError, never another exception, never a hidden neighbour, and never more than a little memory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import struct
import tracemalloc
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnstudio import checkpoint as ckpt
from rnnstudio import paths, runs
from rnnstudio.cli import main as cli_main
from rnnstudio.errors import RNNStudioError
from rnnstudio.store import catalogue
from rnnstudio.store.format import DTYPE_BYTES, read_header
from store_cases import train_good

# Bounded so the whole file takes seconds; RNNSTUDIO_FUZZ_EXAMPLES=2000 for a longer hunt.
FUZZ = settings(max_examples=int(os.environ.get("RNNSTUDIO_FUZZ_EXAMPLES", "40")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PEAK_BYTES = 32 * 2**20  # Python-side allocations per example (tracemalloc)
RSS_GROWTH_KIB = 400_000  # the whole test process, across all examples (ru_maxrss)

leaves = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
huge = st.sampled_from([10**6, 10**9, 2**63, -1, 0, 20000, 1e9, 32.5, "abc", float("nan"), float("inf")])


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One trained model folder and its run record, copied into each test's home."""
    home = tmp_path_factory.mktemp("template-home")
    corpus = home / "tiny.txt"
    corpus.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv("RNNSTUDIO_HOME", str(home))
    try:
        train_good(corpus)
    finally:
        mp.undo()
    return home


@pytest.fixture
def home(template, rnnstudio_home) -> Path:
    shutil.copytree(template / "data", rnnstudio_home / "data")
    return rnnstudio_home


def _leaf_paths(data, prefix=()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _leaf_paths(value, prefix + (key,))
    return out


def _put(data, path: tuple, value):
    data = json.loads(json.dumps(data))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@contextlib.contextmanager
def _small_memory():
    tracemalloc.start()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"peak {peak / 2**20:.1f} MiB"


def _only_user_errors(call):
    """``call()`` either works or raises RNNStudioError with a one-line message."""
    try:
        return call()
    except RNNStudioError as exc:
        assert "\n" not in str(exc), str(exc)
        return None


def _check_folder(home: Path, name: str) -> None:
    """The fuzzed folder: listed (broken or not) beside an intact 'good'; loading it is a user error at worst."""
    with _small_memory():
        listed = {m.name: m for m in catalogue.list_models()}
        assert set(listed) == {"good", name}
        assert listed["good"].error is None
        _only_user_errors(lambda: catalogue.check_model_folder(paths.models_dir() / name))  # no safety net here
        listed[name].row()
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["models"]) == 0
    _only_user_errors(lambda: ckpt.load_model(name))


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- config.json and vocab.json ------------------------------------------------------------------------------

def test_fuzz_config_json_fields(home):
    good = paths.models_dir() / "good"
    config = json.loads((good / "config.json").read_text())
    fields = _leaf_paths(config)
    start = _rss_kib()

    @FUZZ
    @given(field=st.sampled_from(fields), value=json_values | huge)
    def check(field, value):
        folder = paths.models_dir() / "fuzzed"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(good, folder)
        (folder / "config.json").write_text(json.dumps(_put(config, field, value)))
        _check_folder(home, "fuzzed")

    check()
    assert _rss_kib() - start < RSS_GROWTH_KIB


@pytest.mark.parametrize("file", ["config.json", "vocab.json"])
def test_fuzz_whole_json_files(home, file):
    good = paths.models_dir() / "good"

    @FUZZ
    @given(content=st.binary(max_size=200) | json_values.map(json.dumps)
           | st.integers(1, 50_000).map(lambda n: "[" * n + "]" * n))
    def check(content):
        folder = paths.models_dir() / "fuzzed"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(good, folder)
        data = content if isinstance(content, bytes) else content.encode()
        (folder / file).write_bytes(data)
        _check_folder(home, "fuzzed")

    check()


def test_fuzz_vocab_tokens(home):
    good = paths.models_dir() / "good"
    vocab = json.loads((good / "vocab.json").read_text())

    @FUZZ
    @given(tokens=st.lists(json_values, max_size=14) | st.just(vocab["tokens"][::-1]),
           tokenizer=st.sampled_from(["char", "word", 5, None, "bytes"]))
    def check(tokens, tokenizer):
        folder = paths.models_dir() / "fuzzed"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(good, folder)
        (folder / "vocab.json").write_text(json.dumps({"tokens": tokens, "tokenizer": tokenizer}))
        _check_folder(home, "fuzzed")

    check()


# -- safetensors headers -------------------------------------------------------------------------------------

tensor_entries = st.fixed_dictionaries({
    "dtype": st.sampled_from([*DTYPE_BYTES, "F31", 7]),
    "shape": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-2, 2**40), min_size=0, max_size=3) | json_values,
})


@st.composite
def safetensors_files(draw) -> bytes:
    header = draw(st.dictionaries(st.text(max_size=6), tensor_entries, max_size=3) | json_values)
    if isinstance(header, dict) and draw(st.booleans()):
        header["__metadata__"] = draw(json_values)
    raw = json.dumps(header).encode()
    claimed = draw(st.sampled_from([len(raw), len(raw) + 1, 0, 2**63, 2**64 - 1, max(0, len(raw) - 1)]))
    data = draw(st.binary(max_size=64))
    return struct.pack("<Q", claimed) + raw + data


def test_fuzz_safetensors_headers(home):
    good = paths.models_dir() / "good"

    @FUZZ
    @given(blob=safetensors_files() | st.binary(max_size=40))
    def check(blob):
        folder = paths.models_dir() / "fuzzed"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(good, folder)
        (folder / "weights.safetensors").write_bytes(blob)
        with _small_memory():
            header = _only_user_errors(lambda: read_header(folder / "weights.safetensors", "fuzzed"))
            if header is not None:  # what the header check accepts, safetensors reads without surprises
                _only_user_errors(lambda: ckpt.read_tensors(folder / "weights.safetensors", "fuzzed"))
        _check_folder(home, "fuzzed")

    check()


# -- train_state metadata ------------------------------------------------------------------------------------

def test_fuzz_train_state_metadata(home):
    import torch

    good = paths.models_dir() / "good"
    tensors, metadata = ckpt.read_tensors(good / ckpt.STATE, "good")
    meta = json.loads(metadata["json"])
    fields = _leaf_paths(meta)
    from safetensors.torch import save_file

    @FUZZ
    @given(change=st.tuples(st.sampled_from(fields), json_values | huge) | json_values)
    def check(change):
        new = _put(meta, *change) if isinstance(change, tuple) else change
        save_file(tensors, str(good / ckpt.STATE), metadata={**metadata, "json": json.dumps(new)})
        with _small_memory():
            loaded = _only_user_errors(lambda: ckpt.load_train_state(good))
            _only_user_errors(lambda: ckpt.check_resume(good, ckpt.read_config(good), _host()))
        if loaded is not None:  # a well-formed state the trainer restores, or reports as not matching
            model = ckpt.load_model("good").model
            opt = torch.optim.Adam(model.parameters())
            try:
                ckpt.restore_train_state(*loaded, model, opt)
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError):
                pass  # the trainer turns exactly these into "train_state.safetensors is corrupt or does not match"

    check()


def _host():
    from rnnstudio.plugins import default_host

    return default_host()


# -- run records ---------------------------------------------------------------------------------------------

def test_fuzz_run_records(home):
    (record,) = runs.list_runs()
    path = Path(record["path"])
    original = json.loads(path.read_text())
    fields = _leaf_paths(original)

    @FUZZ
    @given(change=st.tuples(st.sampled_from(fields), json_values | huge) | json_values | st.binary(max_size=60))
    def check(change):
        target = path.with_name("fuzzed.json")
        if isinstance(change, tuple):
            target.write_text(json.dumps(_put(original, *change)))
        elif isinstance(change, bytes):
            target.write_bytes(change)
        else:
            target.write_text(json.dumps(change))
        with _small_memory():
            listed = runs.list_runs()
            assert {r["id"] for r in listed} == {path.stem, "fuzzed"}
            assert next(r for r in listed if r["id"] == path.stem).get("status") == "finished"
            for r in listed:
                runs.run_row(r)
                runs.curve(r, "val perplexity")
            runs.curve_names(listed)
            runs.runs_csv(listed)
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli_main(["runs"]) == 0
                assert cli_main(["runs", "--json"]) == 0

    check()


# -- gui-settings.json ---------------------------------------------------------------------------------------

def test_fuzz_gui_settings_file(rnnstudio_home):
    from rnnstudio.gui import settings as gui_settings

    target = rnnstudio_home / "gui-settings.json"
    rnnstudio_home.mkdir(parents=True, exist_ok=True)

    @FUZZ
    @given(content=st.binary(max_size=100) | json_values.map(json.dumps)
           | st.integers(1, 50_000).map(lambda n: "[" * n))
    def check(content):
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        with _small_memory(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a corrupt file warns; that is its job
            data, message = gui_settings.load_settings(target)
        assert isinstance(data, dict) and (message is None or "\n" not in message)

    check()
