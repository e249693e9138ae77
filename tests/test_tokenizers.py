"""Tokenizer plugins: BPE end to end through the real CLI, tokenizer.json round trips, per-character scores,
a plugin tokenizer, the missing-library message and whole-token colouring in the inspector."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import subprocess
import sys

import pytest

import rnnstudio
from rnnstudio.checkpoint import load_model, model_path
from rnnstudio.plugins import load_plugins
from rnnstudio.trainer import TrainConfig, Trainer

pytest.importorskip("tokenizers")

WORDS = "the cat sat on a mat and then it ran to the dog who was not happy about that at all".split()


def rnnstudio_cli(*args, home, check=True):
    env = {**os.environ, "RNNSTUDIO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rnnstudio", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def text_corpus(tmp_path):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(300)]
    path = tmp_path / "text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train(corpus, name, tokens="bpe", host=None, **options):
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(corpus)}, tokens=tokens,
                      tokens_options=options, hidden_size=16, batch_size=4, seq_len=12, max_steps=3, eval_every=0,
                      device="cpu", threads=1, name=name)
    trainer = Trainer(cfg, host=host)
    events = list(trainer.run())
    assert events[-1].kind == "summary", events[-1]
    return trainer


def test_bpe_trains_generates_and_scores_from_the_cli_with_nats_per_char(text_corpus, rnnstudio_home):
    out = rnnstudio_cli("train", "--corpus", "text-file", "--corpus-opt", f"path={text_corpus}", "--tokens", "bpe",
                        "--tokens-opt", "vocab_size=60", "--hidden-size", "24", "--max-steps", "20",
                        "--batch-size", "4", "--seq-len", "16", "--threads", "1", "--name", "sub",
                        home=rnnstudio_home).stdout
    assert "nats-per-char" in out and "bits-per-char" in out  # the validation line
    path = model_path("sub")
    saved = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["name"] == "bpe" and saved["options"] == {"vocab_size": 60} and saved["state"]
    tokens = json.loads((path / "vocab.json").read_text(encoding="utf-8"))["tokens"]
    assert any(len(t) > 1 for t in tokens[1:])  # subwords, not characters

    text = rnnstudio_cli("generate", "--model", "sub", "--prefix", "the cat", "--length", "15", "--seed", "0",
                         home=rnnstudio_home).stdout
    assert text.startswith("the cat") and len(text) > len("the cat") + 15  # 15 tokens, most of them longer than 1

    scored = rnnstudio_cli("score", "--model", "sub", str(text_corpus), home=rnnstudio_home).stdout
    assert "nats per character" in scored
    result = json.loads(rnnstudio_cli("score", "--model", "sub", str(text_corpus), "--json",
                                      home=rnnstudio_home).stdout)
    # Per character is per token spread over the characters the tokens spell.
    chars = len(text_corpus.read_text(encoding="utf-8")) - len(tokens_of_first(path, text_corpus))
    assert result["nats-per-char"] == pytest.approx(result["cross-entropy"] * result["scored"] / chars, rel=1e-6)
    assert result["bits-per-char"] == pytest.approx(result["nats-per-char"] / math.log(2))

    listed = rnnstudio_cli("runs", home=rnnstudio_home).stdout
    assert "nats/ch" in listed and " bpe " in listed
    rows = list(csv.DictReader(io.StringIO(rnnstudio_cli("runs", "--csv", "-", home=rnnstudio_home).stdout)))
    assert rows[0]["tokens"] == "bpe" and float(rows[0]["val_nats_per_char"]) > 0


def tokens_of_first(path, corpus):
    """The first token of the corpus under the saved model (it is read, not predicted)."""
    vocab = load_model(path).vocab
    return vocab.text_tokenizer.split(corpus.read_text(encoding="utf-8"))[0]


def test_tokenizer_json_round_trip_restores_the_learnt_tokens(text_corpus):
    trained = _train(text_corpus, "rt", vocab_size=50).vocab.text_tokenizer  # the one fitted on the corpus
    loaded = load_model("rt")
    tok = loaded.vocab.text_tokenizer
    assert tok is not trained and tok.name == "bpe" and tok.options == {"vocab_size": 50}
    sample = "the dog sat on the happy cat\nzebra!"
    assert tok.split(sample) == trained.split(sample) and " happy" in tok.split(sample)
    corpus_ids = loaded.vocab.encode(text_corpus.read_text(encoding="utf-8"))
    assert 0 not in corpus_ids  # every piece of the training text is a token the model knows
    assert "".join(tok.split(sample)) == sample  # literal pieces: nothing lost, not even unknown characters
    assert loaded.vocab.decode(loaded.vocab.encode("the cat sat")) == "the cat sat"
    assert len(loaded.vocab) <= 50 and any(len(t) > 2 for t in loaded.vocab.idx_to_token)


def test_a_bpe_model_resumes_with_its_saved_tokens(text_corpus):
    _train(text_corpus, "again", vocab_size=40)
    before = (model_path("again") / "vocab.json").read_text(encoding="utf-8")
    cfg = TrainConfig(name="again", resume=True, max_steps=5, device="cpu", threads=1, eval_every=0)
    events = list(Trainer(cfg).run())
    assert events[-1].kind == "summary" and events[-1].steps == 5
    assert (model_path("again") / "vocab.json").read_text(encoding="utf-8") == before


def test_a_damaged_tokenizer_json_is_a_one_line_error(text_corpus):
    _train(text_corpus, "broken", vocab_size=40)
    (model_path("broken") / "tokenizer.json").write_text(json.dumps({"name": "bpe", "options": {}, "state": {"x": 1}}))
    with pytest.raises(rnnstudio.RNNStudioError, match="tokenizer.json holds no valid 'bpe' state"):
        load_model("broken")
    (model_path("broken") / "tokenizer.json").write_text(json.dumps({"name": "word", "options": {}, "state": {}}))
    with pytest.raises(rnnstudio.RNNStudioError, match="names tokenizer 'bpe' but tokenizer.json names 'word'"):
        load_model("broken")


def test_char_models_score_the_same_per_character_as_per_token(text_corpus):
    _train(text_corpus, "chars", tokens="char")
    from rnnstudio.scoring import score_text

    result = score_text(load_model("chars"), text_corpus.read_text(encoding="utf-8")[:2000])
    assert result["unit"] == "characters"
    assert result["nats-per-char"] == pytest.approx(result["cross-entropy"], rel=1e-9)


def test_word_models_spread_each_word_over_its_letters_and_space(text_corpus):
    _train(text_corpus, "words", tokens="word")
    from rnnstudio.inspector import explain

    text = "the cat sat on a mat and then it ran"
    result = explain(load_model("words"), text)
    chars = sum(len(w) + 1 for w in text.split()[1:])  # each predicted word and the space after it
    assert result["chars"] == chars
    assert result["nats-per-char"] == pytest.approx(result["sum_nll"] / chars)
    assert any("nats per character" in step for step in result["worked_example"]["steps"])


class Reversed(rnnstudio.Tokenizer):
    """A third-party tokenizer: words spelled backwards, so decoding must go through its own join."""

    name = "reversed-words"
    description = "Words, each stored reversed."
    separator = " "

    def split(self, text):
        return [w[::-1] for w in text.split()]

    def join(self, tokens):
        return " ".join(t[::-1] for t in tokens)


class ReversedPlugin:
    @rnnstudio.hookimpl
    def register_tokenizers(self, register):
        register(Reversed)


def test_a_plugin_tokenizer_is_a_choice_and_owns_its_decoding(text_corpus):
    host = load_plugins(extra=[("test:reversed", ReversedPlugin())])
    assert "reversed-words" in host.names("tokenizer") and not host.failures
    _train(text_corpus, "rev", tokens="reversed-words", host=host)
    loaded = load_model("rev", host=host)
    assert "eht" in loaded.vocab.idx_to_token  # stored reversed
    assert loaded.vocab.decode(loaded.vocab.encode("the cat")) == "the cat"  # and joined back by the plugin
    with pytest.raises(rnnstudio.RNNStudioError, match="needs a tokenizer plugin that is not loaded"):
        load_model("rev", host=load_plugins())


def test_an_unknown_tokenizer_name_suggests_the_registered_ones(text_corpus, rnnstudio_home):
    proc = rnnstudio_cli("train", "--corpus", "text-file", "--corpus-opt", f"path={text_corpus}", "--tokens", "bpee",
                         "--max-steps", "1", home=rnnstudio_home, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown tokenizer 'bpee'. Did you mean 'bpe'?" in proc.stderr


def test_bpe_without_the_tokenizers_package_says_what_to_install(text_corpus, rnnstudio_home):
    code = ("import sys; sys.modules['tokenizers'] = None; from rnnstudio.cli import main; "
            "sys.exit(main(sys.argv[1:]))")  # None in sys.modules: `import tokenizers` raises ImportError
    env = {**os.environ, "RNNSTUDIO_HOME": str(rnnstudio_home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, "train", "--corpus", "text-file", "--corpus-opt",
                           f"path={text_corpus}", "--tokens", "bpe", "--max-steps", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "rnnstudio[bpe]"' in lines[0], proc.stderr
    models = model_path("any").parent
    assert not models.exists() or not any(models.iterdir())  # refused before any model folder


def test_the_inspector_colours_whole_multi_character_tokens(qtbot):
    from PySide6.QtGui import QTextCursor

    from rnnstudio.gui.inspector_page import TokenView

    view = TokenView()
    qtbot.addWidget(view)
    tokens = ["the", " cat", "\n", " s", "at"]
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]
    view.set_tokens(tokens, colours, [f"tip {i}" for i in range(len(tokens))])
    view.resize(600, 200)
    view.show()
    qtbot.waitExposed(view)
    cursor = QTextCursor(view.document())
    for i, (token, colour) in enumerate(zip(tokens, colours)):
        start = view.starts[i]
        shown = len(token.replace("\n", "↵\n"))
        for offset in range(shown):
            if token[min(offset, len(token) - 1)] == "\n" and offset == shown - 1:
                continue  # the line break itself carries no visible background
            cursor.setPosition(start + offset + 1)  # the format of the character before the cursor
            assert cursor.charFormat().background().color().getRgb()[:3] == colour, (token, offset)
    assert view.token_at(view.point_of(1)) == 1  # hovering a token's first character finds the whole token


def test_the_training_form_offers_every_registered_tokenizer(qtbot):
    from rnnstudio.gui.training_page import TrainingPanel

    panel = TrainingPanel(load_plugins(no_plugins=True))
    qtbot.addWidget(panel)
    combo = panel.fields["tokens"]
    assert {combo.itemData(i) for i in range(combo.count())} >= {"char", "word", "bpe"}
