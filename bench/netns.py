"""Keep the benchmark offline: a network namespace with loopback only.

`enter_loopback_namespace()` re-executes the current command under
``unshare -rn`` (a new user and network namespace) and brings the namespace's
loopback interface up. Inside, 127.0.0.1 works and every other address is
unreachable, so a peer library that would fetch a tokenizer, a price list or
send telemetry fails at once instead of reaching a remote host. The fake
server and every client then run inside the same namespace.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

_FLAG = "AIMOD_BENCH_NETNS"
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

# Settings that keep bespokelabs-curator 0.1 and its dependencies (litellm,
# Hugging Face datasets, posthog) from calling remote services.
CURATOR_OFFLINE_ENV = {
    "TELEMETRY_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "CURATOR_DISABLE_CACHE": "1",
    "CURATOR_DISABLE_RICH_DISPLAY": "1",
}


def isolated() -> bool:
    """Tell whether this process runs in the loopback-only namespace."""
    return os.environ.get(_FLAG) == "1"


def enter_loopback_namespace() -> None:
    """Re-execute this command in a loopback-only namespace, when `unshare` works.

    Inside the namespace (the second pass) it brings loopback up and returns.
    When `unshare` is missing or not permitted it returns without isolation,
    and `isolated()` stays false.
    """
    if isolated():
        _bring_loopback_up()
        return
    unshare = shutil.which("unshare")
    if unshare is None:
        return
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        return
    env = {**os.environ, _FLAG: "1"}
    os.execve(unshare, [unshare, "-rn", sys.executable, *sys.argv], env)


def _bring_loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(
                probe,
                _SIOCSIFFLAGS,
                struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""),
            )


def curator_unavailable(python: str) -> str | None:
    """Return why the curator peer cannot run with this Python, or None if it can."""
    if not python or not Path(python).exists():
        return "not installed"
    if not isolated():
        return "needs isolation"
    found = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print(bool(u.find_spec('bespokelabs')))",
        ],
        capture_output=True,
        text=True,
    )
    if found.stdout.strip() != "True":
        return "not installed"
    return None


def curator_tiktoken_cache(python: str) -> str:
    """Return the tokenizer folder that litellm ships, so tiktoken needs no download."""
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return str(Path(purelib) / "litellm" / "litellm_core_utils" / "tokenizers")
