"""Prompt building and the show rules, without a model."""

from __future__ import annotations

import pytest

from speclsp.completion.context import FimTokens, OpenDocument, PromptBudget, build_prompt, split_at
from speclsp.completion.postprocess import ShowRules


def fake_encode(text: str) -> list[int]:
    return [ord(c) for c in text]  # one token per character: budgets are easy to check


FIM = FimTokens(prefix=-1, suffix=-2, middle=-3, file_sep=-4, repo_name=-5)


def test_split_at_rejects_positions_outside_the_document():
    assert split_at("ab\ncd", 1, 1) == ("ab\nc", "d")
    with pytest.raises(ValueError, match="line 5 is out of range"):
        split_at("ab\ncd", 5, 0)
    with pytest.raises(ValueError, match="character 9 is out of range"):
        split_at("ab\ncd", 0, 9)


def test_fim_prompt_puts_prefix_then_suffix_then_middle():
    p = build_prompt(fake_encode, FIM, "a.py", "def f():\n    ", "\nx = 1\n")
    ids = list(p.ids)
    assert ids[0] == -1 and ids[-1] == -3
    assert ids.index(-2) == 1 + len("def f():\n    ")
    assert p.suffix_ids == tuple(fake_encode("\nx = 1\n"))


def test_prompt_without_fim_is_the_plain_prefix():
    p = build_prompt(fake_encode, None, "a.py", "abc", "def")
    assert p.ids == tuple(fake_encode("abc")) and p.suffix == ""


def test_budget_trims_prefix_at_line_steps_and_keeps_the_cursor_end():
    prefix = "".join(f"line {i}\n" for i in range(400))
    p = build_prompt(fake_encode, FIM, "a.py", prefix, "", budget=PromptBudget(max_prompt_tokens=300, suffix_tokens=10))
    assert len(p.ids) <= 300
    assert p.prefix.endswith("line 399\n") and p.prefix.startswith("line ")
    # one more character typed: the prompt start does not move (the KV cache stays valid)
    q = build_prompt(
        fake_encode, FIM, "a.py", prefix + "x", "", budget=PromptBudget(max_prompt_tokens=300, suffix_tokens=10)
    )
    assert q.prefix.split("\n")[0] == p.prefix.split("\n")[0]


def test_relevant_snippets_of_other_files_come_first():
    other = OpenDocument(
        "util.py", "def compute_total(items):\n    return sum(items)\n" + "\n" * 30 + "def unrelated():\n    pass\n"
    )
    prefix = "from util import compute_total\n\nvalues = [1, 2]\ntotal = compute_total(values)\n"
    p = build_prompt(fake_encode, FIM, "main.py", prefix, "", [other])
    assert p.snippets == ("util.py:0",)
    assert p.ids[0] == -5 and p.context_tokens > 0
    assert p.ids.index(-1) > p.context_tokens - 1  # the fim prefix follows the context


def test_single_line_when_text_follows_the_cursor():
    r = ShowRules.at("x = foo(", ")\ny = 2\n")
    assert r.single_line
    assert r.finalize("a, b)\nz = 3") == "a, b"


def test_multi_line_stops_at_the_end_of_the_indentation_scope():
    r = ShowRules.at("def f(a):\n    ", "\n")
    text = "total = a + 1\n    return total\n\ndef g():\n    pass\n"
    assert r.finalize(text) == "total = a + 1\n    return total"


def test_stops_where_the_model_repeats_the_text_after_the_cursor():
    r = ShowRules.at("def f(a):\n    ", "\n    return result\n")
    assert r.finalize("result = a * 2\n    return result\n") == "result = a * 2"


def test_top_level_block_after_a_blank_line_ends_the_suggestion():
    r = ShowRules.at("import os\n", "")
    assert r.finalize("import sys\n\n\n# Example usage\nprint(1)\n") == "import sys"


def test_whitespace_only_is_no_suggestion():
    r = ShowRules.at("x = 1\n", "")
    assert r.finalize("   \n\n  ") == ""
    assert r.finalize("y = 2   \n") == "y = 2"


def test_cut_is_safe_on_partial_text():
    r = ShowRules.at("def f(a):\n    ", "\n")
    assert r.cut("total = a") is None
    assert r.cut("total = a\n    ret") is None
    assert r.cut("total = a\nx") == len("total = a")


@pytest.mark.parametrize(
    "prefix, suffix, text, shown",
    [
        # Enter after an accepted line: the same line again is dropped, whatever its indentation.
        ('    name = "float range"\n    ', "\n    return name\n", 'name = "float range"', ""),
        ('    name = "float range"\n    ', "\n", 'name = "float range"\n    size = 2', ""),
        # Completing the line into the one below it: dropped too.
        ("def f():\n    ", "\n    return total\n", "return total", ""),
        # Single-line mode: the whole line with the text after the cursor counts.
        ("total = compute(a)\ntotal = compute(", ")\n", "a", ""),
        ("total = compute(a)\ntotal = compute(", ")\n", "b", "b"),
        # Different lines, and lines without letters or digits, are shown.
        ('    name = "float range"\n    ', "\n", "size = 2", "size = 2"),
        ("    })\n    ", "\n", "})", "})"),
        ("    return a\n    ", "\n", "return a + b", "return a + b"),
    ],
)
def test_a_suggestion_repeating_the_line_above_or_below_is_dropped(prefix, suffix, text, shown):
    rules = ShowRules.at(prefix, suffix)
    assert rules.finalize(text) == shown
    if not shown and "\n" in text:
        assert rules.cut(text) == 0  # the engine stops as soon as the first line repeats


def test_a_partial_first_line_is_not_judged_before_it_is_complete():
    rules = ShowRules.at('    name = "float range"\n    ', "\n")
    assert rules.cut('name = "float') is None
