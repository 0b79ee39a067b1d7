"""Shared fixtures: a tiny random model built once per test session (seconds, no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2 model + tokenizer on disk (loadable like any local model)."""
    from speclsp import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """The tiny model loaded in float32 on CPU (exact comparisons need fp32)."""
    from speclsp import model

    return model.load(str(tiny_model_dir), device="cpu", dtype="float32", warm_up=False)


def default_model_ready() -> bool:
    from speclsp import models

    return models.is_ready(models.converted_dir(models.DEFAULT_MODEL))


@pytest.fixture(scope="session")
def default_lm():
    """The default model (qwen2.5-coder-0.5b), pulled and converted once into the cache."""
    from speclsp import model, models

    if not default_model_ready() and os.environ.get("SPECLSP_ALLOW_PULL") != "1":
        pytest.skip("default model not cached; run `speclsp models pull qwen2.5-coder-0.5b` (CI does)")
    return model.load(models.DEFAULT_MODEL, device="cpu")
