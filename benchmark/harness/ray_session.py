"""How the harness starts or joins Ray, keeping Ray's security defaults.

- A local run starts a private Ray instance bound to the loopback address (every port it
  opens listens on 127.0.0.1; no dashboard) with Ray's token authentication on (Ray
  2.60's default: ``ray.init()`` uses ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or
  ``~/.ray/auth_token``, and creates the last if there is none).
- Joining a cluster (``--address``) follows the cluster's auth mode: a token given by
  ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` is sent; a token
  cluster joined without one is refused before anything starts, with one line saying how
  to pass it. ``$RAY_AUTH_MODE``, when set, is left as the user set it.

The benchmark never switches authentication off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
"""The address a local Ray instance binds to."""

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"

PROBE_TIMEOUT_S = 30.0
"""How long the auth probe of a cluster may take (seconds; it starts a Python process)."""

TOKEN_HINT = (
    "pass the cluster's token: `export RAY_AUTH_TOKEN=$(ray get-auth-token)` with the "
    "output of `ray get-auth-token` on the head node, or copy its ~/.ray/auth_token here"
)


class ClusterAuthError(Exception):
    """The cluster wants a token this machine does not have (one actionable line)."""


SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch between its single-machine mode (``0``: the node's address is 127.0.0.1, as
Ray does on macOS and Windows) and its cluster mode (``1``, Linux's default)."""


WORKER_NICENESS = 0
"""The niceness of a local Ray's workers: the driver's (Ray's default is 15)."""


def local_init_options() -> dict[str, Any]:
    """``ray.init`` keywords of a local run: a new private instance (``address="local"``:
    never a cluster named by ``$RAY_ADDRESS`` or the last one started on this machine),
    loopback only, no dashboard.

    On Linux Ray takes the machine's network address as a new node's address even when
    given ``127.0.0.1``, and then its GCS, raylet and workers listen on every interface
    (measured with ``scripts/ray_ports.py``). This puts Ray in its single-machine mode for
    this process and the Ray processes it starts, where the node's address is 127.0.0.1 and
    they listen on loopback only. Joining a cluster does not call it.

    Its workers run at the driver's priority (``worker_niceness`` 0): Ray's default of 15
    lowers every worker, so on a machine with other work the trials got what was left (a
    trial beside three other 1-thread jobs ran at ~3% of a core, measured with ``ps``) while the
    serial executor's ran at full share. A trial is the run's work, not background work.
    """
    os.environ[SINGLE_MACHINE_ENV] = "0"  # the processes Ray starts, and a later import
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # read when a node's address is chosen; fixed at import
        constants.ENABLE_RAY_CLUSTER = False
    return {
        "address": "local",
        "_node_ip_address": LOOPBACK,
        "include_dashboard": False,
        "_system_config": {"worker_niceness": WORKER_NICENESS},
    }


def token_path() -> Path:
    """Where Ray looks for a token file: ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    given = os.environ.get(TOKEN_PATH_ENV)
    return Path(given).expanduser() if given else Path.home() / ".ray" / "auth_token"


def token_available() -> bool:
    """Whether this process has a Ray token to send (environment or token file)."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return True
    try:
        return bool(token_path().read_text().strip())
    except (OSError, UnicodeDecodeError):
        return False


def follow_cluster_auth() -> None:
    """Before ``ray.init(address=...)``: send the token when there is one.

    Ray only sends a token in token mode, and it infers that mode for ``address="auto"``
    alone; with ``$RAY_AUTH_MODE`` unset and a token at hand this sets it to ``token``
    (a cluster without authentication accepts such a client). A mode the user set stays.
    """
    if AUTH_MODE not in os.environ and token_available():
        os.environ[AUTH_MODE] = "token"


_PROBE = """
import sys
from ray._raylet import GcsClient
client = GcsClient(address=sys.argv[1])
client.internal_kv_get(b"mpqbench-auth-probe", namespace=None, timeout=float(sys.argv[2]))
"""


def probe_gcs(gcs_address: str, timeout: float = 10.0) -> str | None:
    """Ask the GCS at ``HOST:PORT`` for a key as this process would (its token, if any):
    ``None`` when it answers, else the last line of the error (in another process, so
    that this one's Ray state stays clean)."""
    env = dict(os.environ)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, gcs_address, str(timeout)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return "no answer"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {done.returncode}"


def is_auth_refusal(error: str) -> bool:
    """Whether an error text from Ray says the token was missing or wrong."""
    text = error.lower()
    return "authenticat" in text or "unauthenticated" in text or "token" in text


def check_cluster_auth(gcs_address: str) -> None:
    """Refuse a token cluster joined without a token, before anything starts.

    Raises:
        ClusterAuthError: the cluster refused this process's credentials (one line).
    """
    follow_cluster_auth()
    error = probe_gcs(gcs_address)
    if error is not None and is_auth_refusal(error):
        what = "refused the token given" if token_available() else "needs a token"
        raise ClusterAuthError(f"the Ray cluster at {gcs_address} {what}: {TOKEN_HINT}")
