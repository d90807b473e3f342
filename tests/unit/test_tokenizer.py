"""Unit tests for streamguard.tokenizer: RoBERTa layout, determinism, save/reload, real data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from streamguard import cli_data
from streamguard.datasets import inspect_files, read_examples, token_lengths
from streamguard.synth import synth_examples
from streamguard.tokenizer import train_bpe_tokenizer

TEXTS = [row["func"] for row in synth_examples(300, seed=3)]


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return train_bpe_tokenizer(TEXTS, vocab_size=600, max_len=64)


def test_special_tokens_have_roberta_ids(tok: PreTrainedTokenizerFast) -> None:
    expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id,
            tok.mask_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 1, 2, 3, 4, 0, 2)
    assert len(tok) == 600


def test_encodings_are_wrapped_truncated_right_and_padded(tok: PreTrainedTokenizerFast) -> None:
    ids = tok("int main(void) { return 0; }")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids  # byte-level: nothing is unknown
    assert tok.decode(ids, skip_special_tokens=True) == "int main(void) { return 0; }"
    assert tok.model_max_length == 64 and tok.truncation_side == "right"

    long = TEXTS[0] * 4
    full = tok(long)["input_ids"]
    cut = tok(long, truncation=True)["input_ids"]
    assert len(full) > 64 and len(cut) == 64
    assert cut[:-1] == full[:63] and cut[-1] == 2  # right side dropped, </s> kept

    batch = tok(["a", "int x = 1;"], padding=True)
    assert batch["input_ids"][0][-1] == 1 and batch["attention_mask"][0][-1] == 0


def test_training_is_deterministic() -> None:
    # Fresh tokenizers: calls with padding=True change the backend's padding state.
    first, again = (train_bpe_tokenizer(TEXTS, vocab_size=600, max_len=64) for _ in range(2))
    assert again.backend_tokenizer.to_str() == first.backend_tokenizer.to_str()
    assert json.loads(first.backend_tokenizer.to_str())["model"]["merges"]  # really trained


def test_save_dir_reloads_identically_with_autotokenizer(tmp_path: Path) -> None:
    tok = train_bpe_tokenizer(iter(TEXTS), vocab_size=600, max_len=64, save_dir=tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.model_max_length, loaded.truncation_side, loaded.pad_token) == (64, "right",
                                                                                    "<pad>")
    assert loaded.all_special_tokens == tok.all_special_tokens
    assert loaded(TEXTS[:5], truncation=True, padding=True)["input_ids"] == \
        tok(TEXTS[:5], truncation=True, padding=True)["input_ids"]


@pytest.mark.parametrize(("vocab_size", "max_len", "match"), [
    (100, 64, "vocab_size must be at least 261"),
    (600, 1, "max_len must be at least 2"),
])
def test_bad_arguments_say_what_is_accepted(vocab_size: int, max_len: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_bpe_tokenizer(TEXTS, vocab_size=vocab_size, max_len=max_len)


def test_token_lengths_and_truncation_rate_count_special_tokens(
        tok: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    funcs = TEXTS[:20]
    lengths = token_lengths(tok, funcs)
    assert lengths == [len(tok.encode(f)) for f in funcs]  # <s> and </s> included
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"func": f, "target": i % 2}) + "\n"
                            for i, f in enumerate(funcs)))
    cut = sorted(lengths)[10]
    stats = inspect_files([path], tokenizer=tok, max_len=cut)["files"][0]["tokens"]
    over = sum(n > cut for n in lengths)
    assert stats["truncated"] == over and stats["truncated_fraction"] == round(over / 20, 4)
    assert (stats["min"], stats["max"], stats["max_len"]) == (min(lengths), max(lengths), cut)


def test_real_devign_valid_trains_and_measures(devign: Path) -> None:
    funcs = [e.func for e in read_examples(devign / "valid.jsonl")]
    tok = train_bpe_tokenizer(funcs, vocab_size=8000, max_len=512)
    assert len(tok) == 8000
    lengths = sorted(token_lengths(tok, funcs))
    median_chars = sorted(len(f) for f in funcs)[len(funcs) // 2]
    # Byte-level BPE on C code packs roughly 3 characters a token.
    assert median_chars / 5 < lengths[len(lengths) // 2] < median_chars / 2


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="streamguard")
    cli_data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_cli_inspect_with_trained_and_saved_tokenizers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "synth.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in synth_examples(200, seed=1)))
    assert run_cli("data", "inspect", str(path), "--train-tokenizer", "--max-len", "64",
                   "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    tokens = stats["files"][0]["tokens"]
    assert tokens["max_len"] == 64 and 0 < tokens["truncated_fraction"] < 1
    assert "byte-level BPE" in stats["tokenizer"]

    train_bpe_tokenizer(TEXTS, vocab_size=600, max_len=64, save_dir=tmp_path / "tok")
    assert run_cli("data", "inspect", str(path), "--tokenizer", str(tmp_path / "tok")) == 0
    assert "truncated at 512 tokens" in capsys.readouterr().out

    assert run_cli("data", "inspect", str(path), "--tokenizer", str(tmp_path / "none")) == 2
    assert "cannot load tokenizer" in capsys.readouterr().err
