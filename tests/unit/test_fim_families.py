"""FIM templates per model family: detection from special tokens and the exact prompts,
first with fake vocabularies and encoders, then with in-process tokenizers carrying each
family's tokens (no hub, no downloads)."""

from __future__ import annotations

import pytest

from speclsp.completion import fim as families
from speclsp.completion.context import FimTokens, OpenDocument, build_prompt
from speclsp.completion.fim import detect_fim


def enc(text: str) -> list[int]:
    return [ord(c) for c in text]  # one token per character, no leading space


def sp_enc(text: str) -> list[int]:
    """Like a SentencePiece (Llama) tokenizer: a "▁" before the text, spaces as "▁"."""
    return [ord("▁")] + [ord("▁") if c == " " else ord(c) for c in text]


QWEN = {"<|fim_prefix|>": -1, "<|fim_suffix|>": -2, "<|fim_middle|>": -3, "<|file_sep|>": -4, "<|repo_name|>": -5}
STARCODER2 = {"<fim_prefix>": -11, "<fim_suffix>": -12, "<fim_middle>": -13, "<file_sep>": -14, "<repo_name>": -15}
CODELLAMA = {"▁<PRE>": -21, "▁<SUF>": -22, "▁<MID>": -23, "▁<EOT>": -24, "<s>": -29}
CODELLAMA_PLAIN = {"<PRE>": -31, "<SUF>": -32, "<MID>": -33, "<EOT>": -34}
DEEPSEEK = {"<｜fim▁begin｜>": -41, "<｜fim▁hole｜>": -42, "<｜fim▁end｜>": -43, "<｜begin▁of▁sentence｜>": -49}
CODEGEMMA = {
    "<|fim_prefix|>": -51,
    "<|fim_suffix|>": -52,
    "<|fim_middle|>": -53,
    "<|file_separator|>": -54,
    "<bos>": -59,
}

PREFIX, SUFFIX = "def f(a):\n    ", "\n    return b\n"


@pytest.mark.parametrize(
    "vocab, family",
    [
        (QWEN, "qwen"),
        (STARCODER2, "starcoder"),
        (CODELLAMA, "codellama"),
        (CODELLAMA_PLAIN, "codellama"),
        (DEEPSEEK, "deepseek"),
        (CODEGEMMA, "codegemma"),
    ],
)
def test_the_family_is_detected_from_its_special_tokens(vocab, family):
    assert detect_fim({**vocab, "<unrelated>": 7}).family == family


def test_no_complete_set_of_markers_is_no_fim_and_the_plain_prefix():
    assert detect_fim({}) is None
    assert detect_fim({"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": None}) is None
    assert detect_fim({"<fim_prefix>": 1, "<fim_middle>": 3, "<|endoftext|>": 0}) is None
    p = build_prompt(enc, detect_fim({"<|endoftext|>": 0}), "a.py", PREFIX, SUFFIX)
    assert p.ids == tuple(enc(PREFIX)) and p.suffix == ""


def test_qwen_detection_gives_todays_tokens():
    assert detect_fim(QWEN) == FimTokens(prefix=-1, suffix=-2, middle=-3, file_sep=-4, repo_name=-5)


def test_qwen_prompt():
    p = build_prompt(enc, detect_fim(QWEN), "a.py", PREFIX, SUFFIX)
    assert p.ids == (-1, *enc(PREFIX), -2, *enc(SUFFIX), -3)


def test_starcoder_prompt_and_repo_context():
    fim = detect_fim(STARCODER2)
    assert build_prompt(enc, fim, "a.py", PREFIX, SUFFIX).ids == (-11, *enc(PREFIX), -12, *enc(SUFFIX), -13)
    other = OpenDocument("util.py", "def compute_total(items):\n    return sum(items)\n")
    p = build_prompt(enc, fim, "main.py", "total = compute_total(x)\n", "", [other])
    ctx = [-15, *enc("workspace\n"), -14, *enc(f"util.py\n{other.text}\n"), -14, *enc("main.py\n")]
    assert list(p.ids) == ctx + [-11, *enc("total = compute_total(x)\n"), -12, -13]
    assert p.context_tokens == len(ctx)


def test_starcoder1_without_repo_tokens_gets_comment_context():
    fim = detect_fim({k: v for k, v in STARCODER2.items() if k not in ("<file_sep>", "<repo_name>")})
    other = OpenDocument("util.py", "def compute_total(items):\n    return sum(items)\n")
    p = build_prompt(enc, fim, "main.py", "total = compute_total(x)\n", "", [other])
    assert list(p.ids[: p.context_tokens]) == enc(f"# util.py\n{other.text}\n\n")
    assert p.ids[p.context_tokens] == -11


def test_codellama_prompt_spacing():
    # <s><PRE> {prefix} <SUF>{suffix} <MID>: the "▁" markers carry the spaces before them.
    fim = detect_fim(CODELLAMA)
    p = build_prompt(enc, fim, "a.py", PREFIX, SUFFIX)
    assert p.ids == (-29, -21, *enc(" " + PREFIX), -22, *enc(SUFFIX), -23)
    assert p.suffix_ids == tuple(enc(SUFFIX))


def test_codellama_without_the_marker_spaces_writes_them_as_text():
    p = build_prompt(enc, detect_fim(CODELLAMA_PLAIN), "a.py", PREFIX, SUFFIX)
    assert p.ids == (-31, *enc(" " + PREFIX), *enc(" "), -32, *enc(SUFFIX), *enc(" "), -33)


def test_codellama_with_a_sentencepiece_tokenizer_matches_metas_encoding():
    # Meta: [BOS, PRE] + encode(prefix) (with SentencePiece's leading "▁") + [SUF]
    # + encode_infilling(suffix) (without it) + [MID].
    p = build_prompt(sp_enc, detect_fim(CODELLAMA), "a.py", PREFIX, SUFFIX)
    assert p.ids == (-29, -21, *sp_enc(PREFIX), -22, *sp_enc(SUFFIX)[1:], -23)


def test_deepseek_prompt():
    p = build_prompt(enc, detect_fim(DEEPSEEK), "a.py", PREFIX, SUFFIX)
    assert p.ids == (-49, -41, *enc(PREFIX), -42, *enc(SUFFIX), -43)


def test_codegemma_prompt_and_file_context_without_repo_name():
    fim = detect_fim(CODEGEMMA)
    assert fim.repo_name is None and fim.file_sep == -54
    assert build_prompt(enc, fim, "a.py", PREFIX, SUFFIX).ids == (-59, -51, *enc(PREFIX), -52, *enc(SUFFIX), -53)
    other = OpenDocument("util.py", "def compute_total(items):\n    return sum(items)\n")
    p = build_prompt(enc, fim, "main.py", "total = compute_total(x)\n", "", [other])
    ctx = [-54, *enc(f"util.py\n{other.text}\n"), -54, *enc("main.py\n")]
    assert list(p.ids) == [-59, *ctx, -51, *enc("total = compute_total(x)\n"), -52, -53]


def test_every_family_token_is_looked_up_and_every_end_token_stops():
    from speclsp.local import model

    assert set(families.token_strings()) <= set(model.FIM_TOKENS)
    for fam in families.FAMILIES:
        assert set(fam.end) <= set(model.END_TOKENS), fam.name


# --- real tokenizers carrying each family's tokens ---------------------------------------

FAMILY_TOKENS = {
    "starcoder": [
        "<|endoftext|>",
        "<fim_prefix>",
        "<fim_middle>",
        "<fim_suffix>",
        "<fim_pad>",
        "<file_sep>",
        "<repo_name>",
    ],
    "codellama": ["<s>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"],
    "deepseek": [
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁begin｜>",
        "<｜fim▁end｜>",
        "<|EOT|>",
    ],
    "codegemma": [
        "<bos>",
        "<eos>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|file_separator|>",
        "<end_of_turn>",
    ],
    None: ["<|endoftext|>"],
}
END = {
    "starcoder": ["<|endoftext|>", "<fim_pad>", "<file_sep>"],
    "codellama": ["▁<EOT>", "</s>"],
    "deepseek": ["<｜end▁of▁sentence｜>", "<|EOT|>"],
    "codegemma": ["<|file_separator|>", "<eos>", "<end_of_turn>"],
    None: ["<|endoftext|>"],
}
SPLIT = {
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    "codellama": ("▁<PRE>", "▁<SUF>", "▁<MID>"),
    "deepseek": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    "codegemma": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
}


@pytest.fixture(scope="module")
def family_backend(tiny_lm):
    """A local backend over the tiny model with a tokenizer trained with `family`'s tokens."""
    from speclsp.local.backend import LocalBackend
    from speclsp.local.model import LoadedModel
    from speclsp.local.tiny import build_tokenizer

    def make(family):
        tokens = FAMILY_TOKENS[family]
        tok = build_tokenizer(tokens, eos=tokens[1] if family in ("codellama", "deepseek", "codegemma") else tokens[0])
        return LocalBackend(LoadedModel(tiny_lm.model, tok, tiny_lm.device, tiny_lm.dtype, f"tiny-{family}"))

    return make


@pytest.mark.parametrize("family", ["starcoder", "codellama", "deepseek", "codegemma", None])
def test_a_tokenizer_with_a_familys_tokens_gets_its_template_and_end_tokens(family_backend, family):
    from speclsp.completion.completer import Completer, CompletionRequest

    backend = family_backend(family)
    vocab = backend.tokenizer.get_vocab()
    assert {vocab[t] for t in END[family]} <= backend.lm.end_ids
    completer = Completer(backend)
    req = CompletionRequest("a.py", PREFIX + SUFFIX, 1, 4)
    prompt, _ = completer.prompt_for(req)
    text = backend.decode(prompt.ids)
    if family is None:
        assert completer.fim is None and text == PREFIX
        return
    assert completer.fim.family == family
    pre, suf, mid = SPLIT[family]
    if family == "codellama":
        assert text == f"<s>{pre} {PREFIX}{suf}{SUFFIX}{mid}"  # byte-level BPE: no SentencePiece space
    else:
        bos = {"deepseek": "<｜begin▁of▁sentence｜>", "codegemma": "<bos>"}.get(family, "")
        assert text == f"{bos}{pre}{PREFIX}{suf}{SUFFIX}{mid}"
    assert prompt.ids.count(vocab[suf]) == 1 and prompt.ids[-1] == vocab[mid]
    # the drafter labels the suffix part between the family's own markers
    drafter = completer.drafter_for(req)
    assert (drafter.fim_suffix_id, drafter.fim_middle_id) == (vocab[suf], vocab[mid])


def test_a_family_prompt_generates_and_stops(family_backend):
    """End to end on the tiny model: a DeepSeek-style prompt runs through the engine."""
    from speclsp.completion.completer import Completer, CompletionRequest

    backend = family_backend("deepseek")
    completion = Completer(backend).complete(
        CompletionRequest("a.py", PREFIX + SUFFIX, 1, 4, max_tokens=8, lookahead="fixed:4")
    )
    assert completion.prompt.ids[0] == backend.tokenizer.get_vocab()["<｜begin▁of▁sentence｜>"]
    assert completion.stats.new_tokens >= 1


def test_codellama_at_the_start_of_a_document_has_no_stray_space():
    p = build_prompt(sp_enc, detect_fim(CODELLAMA), "a.py", "", "x = 1\n")
    assert p.ids == (-29, -21, -22, *sp_enc("x = 1\n")[1:], -23)
