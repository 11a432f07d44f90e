"""Drive a real ComfyUI server headless on CPU: start it on a free port, talk to its HTTP/ws API, stop it.

Only the process this module starts is ever stopped (by its pid). Nothing here imports ComfyUI: the
server runs in a subprocess from the checkout in ``COMFYUI_DIR`` with the Python in ``COMFYUI_PYTHON``
(default: the Python running pytest).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PACK_FOLDER = "mtvcrafter"  # folder name the pack is installed under (the registry id)
PACK_ROOT = Path(__file__).resolve().parents[2]
# Test-only custom node folder installed next to the pack: reports ComfyUI's loaded models (GET /mtv_test/...).
PROBE_FOLDER = "mtv_test_probe"
PROBE_SOURCE = Path(__file__).resolve().parent / "probe_pack"
STUB_FOLDER = "mtv_test_stubs"  # test-only stand-ins for native loaders (tests/integration/stub_nodes)
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never send 127.0.0.1 through a proxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def comfyui_version(comfyui_dir: Path) -> str:
    text = (comfyui_dir / "comfyui_version.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def install_custom_nodes(base: Path) -> tuple[str, ...]:
    """The pack (a folder named after its registry id, as users have it), the probe and the stand-ins for native
    loaders that know only released sizes (``stub_nodes``) under base/custom_nodes; returns the folder names to
    whitelist."""
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir(exist_ok=True)
    (custom_nodes / PACK_FOLDER).symlink_to(PACK_ROOT, target_is_directory=True)
    shutil.copytree(PROBE_SOURCE, custom_nodes / PROBE_FOLDER, ignore=shutil.ignore_patterns("__pycache__"))
    (custom_nodes / STUB_FOLDER).symlink_to(Path(__file__).resolve().parent / "stub_nodes", target_is_directory=True)
    return PACK_FOLDER, PROBE_FOLDER, STUB_FOLDER


def start_server_like(env: Any, base: Path, extra_args: tuple[str, ...] = (), cpu: bool = True) -> "ComfyServer":
    """Another server in ``base`` with the models and inputs of ``env`` (conftest's ComfyEnv), started with
    ``extra_args`` (e.g. --lowvram, which needs ``cpu=False``: a GPU). The caller stops it."""
    (base / "input").symlink_to(env.input_dir, target_is_directory=True)
    server = ComfyServer(env.server.comfyui_dir, base, extra_paths_yaml=env.base / "extra_model_paths.yaml",
                         whitelist=install_custom_nodes(base), extra_args=extra_args, cpu=cpu)
    server.start()
    return server


class ComfyError(RuntimeError):
    """The server refused a prompt, a prompt failed, or the server did not answer in time."""


@dataclass
class RunResult:
    """What a finished prompt produced, as seen on the websocket and in /history."""

    prompt_id: str
    status: str  # "success", "error", "interrupted" (or "timeout")
    history: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    binary_previews: int = 0
    seconds: float = 0.0

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m.get("data", {}) for m in self.messages if m.get("type") == kind]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.history.get("outputs", {})

    def node_seconds(self) -> dict[str, float]:
        """Wall time per executed node id, from the 'executing' messages (cached nodes are absent)."""
        marks = [(m["data"].get("node"), m["_t"]) for m in self.messages if m.get("type") == "executing"]
        return {node: round(t1 - t0, 2) for (node, t0), (_, t1) in zip(marks, marks[1:]) if node is not None}

    def error_text(self) -> str:
        errors = self.of_type("execution_error")
        if errors:
            e = errors[0]
            return (f"{e.get('node_type')} (node {e.get('node_id')}): {e.get('exception_type')}: "
                    f"{e.get('exception_message')}\n{''.join(e.get('traceback') or [])}")
        return json.dumps(self.history.get("status", {}), indent=1)[:4000]


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1 with its own base directory."""

    def __init__(self, comfyui_dir: Path, base_dir: Path, extra_paths_yaml: Path | None = None,
                 python: str | None = None, whitelist: tuple[str, ...] = (PACK_FOLDER,),
                 extra_args: tuple[str, ...] = (), cpu: bool = True) -> None:
        self.comfyui_dir = Path(comfyui_dir)
        self.base_dir = Path(base_dir)
        self.extra_paths_yaml = extra_paths_yaml
        self.python = python or os.environ.get("COMFYUI_PYTHON") or sys.executable
        self.whitelist = whitelist
        self.extra_args = extra_args
        self.cpu = cpu  # --cpu; ComfyUI refuses it together with its VRAM flags (--lowvram, --novram, ...)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"
        self.startup_seconds = 0.0
        self.version = comfyui_version(self.comfyui_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.python, "main.py", *(["--cpu"] if self.cpu else []),
               "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base_dir), "--disable-all-custom-nodes",
               "--whitelist-custom-nodes", *self.whitelist, "--database-url", "sqlite:///:memory:",
               "--preview-method", "none", "--disable-api-nodes"]
        if self.extra_paths_yaml is not None:
            cmd += ["--extra-model-paths-config", str(self.extra_paths_yaml)]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 180.0) -> None:
        (self.base_dir / "custom_nodes").mkdir(parents=True, exist_ok=True)  # ComfyUI crashes without it
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Tiny models gain nothing from threads, and on a busy 2-core machine torch's spinning OpenMP threads
        # made the same runs 5-8x slower (measured 15 s with 1 thread vs 78-122 s with 2). Set it to override.
        env.setdefault("OMP_NUM_THREADS", "1")
        env.pop("PYTHONPATH", None)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.comfyui_dir, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI exited with code {self.proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                self.startup_seconds = time.monotonic() - started
                return
            except (OSError, ComfyError):
                time.sleep(0.5)
        self.stop()
        raise ComfyError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    # -- HTTP ------------------------------------------------------------------------------------

    def request(self, path: str, data: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"} if body is not None else {})
        try:
            with _LOCAL.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET {path} -> HTTP {status}: {body[:2000]!r}")
        return json.loads(body)

    def post_json(self, path: str, data: Any, timeout: float = 30.0) -> tuple[int, Any]:
        status, body = self.request(path, data=data, timeout=timeout)
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode(errors="replace")

    def object_info(self) -> dict[str, Any]:
        return self.get_json("/object_info", timeout=120)

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        status, body = self.request(f"/view?{query}", timeout=60)
        if status != 200:
            raise ComfyError(f"/view {filename} -> HTTP {status}")
        return body

    # -- prompts ---------------------------------------------------------------------------------

    def queue(self, prompt: dict[str, Any], client_id: str, workflow: dict | None = None) -> str:
        payload: dict[str, Any] = {"prompt": prompt, "client_id": client_id}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        status, body = self.post_json("/prompt", payload)
        if status != 200:
            raise ComfyError(f"POST /prompt -> HTTP {status}: {json.dumps(body, indent=1)[:6000]}")
        if body.get("node_errors"):
            raise ComfyError(f"POST /prompt node errors: {json.dumps(body['node_errors'], indent=1)[:6000]}")
        return body["prompt_id"]

    def connect(self, client_id: str):
        """A websocket connected to /ws (websocket-client)."""
        import websocket  # websocket-client, a test requirement of ComfyUI

        last: Exception | None = None
        for _ in range(5):
            try:
                # our own socket: websocket-client would route 127.0.0.1 through $http_proxy
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                return websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=5,
                                                   socket=sock)
            except OSError as exc:
                last = exc
                time.sleep(1)
        raise ComfyError(f"cannot connect to ComfyUI's websocket: {last}")

    def run(self, prompt: dict[str, Any], timeout: float = 300.0, workflow: dict | None = None,
            on_message=None) -> RunResult:
        """Queue ``prompt`` and follow /ws until it ends (success, error or interrupt) or ``timeout``.

        ``on_message(server, message)`` is called for every JSON message (e.g. to interrupt mid-run).
        """
        client_id = uuid.uuid4().hex
        ws = self.connect(client_id)
        started = time.monotonic()
        try:
            prompt_id = self.queue(prompt, client_id, workflow)
            messages: list[dict[str, Any]] = []
            previews = 0
            status = "timeout"
            while time.monotonic() - started < timeout:
                try:
                    raw = ws.recv()
                except Exception as exc:  # websocket timeout: poll /history as a fallback
                    if type(exc).__name__ != "WebSocketTimeoutException":
                        raise
                    hist = self.get_json(f"/history/{prompt_id}").get(prompt_id)
                    if hist and hist.get("status", {}).get("completed") is not None and hist["status"].get(
                            "status_str") in ("success", "error"):
                        status = hist["status"]["status_str"]
                        break
                    continue
                if isinstance(raw, bytes):
                    previews += 1
                    continue
                msg = json.loads(raw)
                msg["_t"] = time.monotonic() - started
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                messages.append(msg)
                if on_message is not None:
                    on_message(self, msg)
                kind = msg.get("type")
                if kind == "execution_error":
                    status = "error"
                elif kind == "execution_interrupted":
                    status = "interrupted"
                elif kind == "execution_success":
                    status = "success"
                elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    if status == "timeout":
                        status = "success"
                    break
                if status in ("error", "interrupted"):
                    break
        finally:
            ws.close()
        seconds = time.monotonic() - started
        history = self._history(prompt_id)
        return RunResult(prompt_id, status, history, messages, previews, seconds)

    def _history(self, prompt_id: str, wait: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + wait
        while True:
            hist = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if hist or time.monotonic() > deadline:
                return hist or {}
            time.sleep(0.2)
