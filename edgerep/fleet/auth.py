"""Ray token authentication for the fleet: on by default for the head, the devices and the CI side.

Ray reads ``RAY_AUTH_MODE=token`` and the token from ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``
or ``~/.ray/auth_token``. ``use_token`` sets the mode in this process's environment (so the nodes it
starts inherit it), points Ray at ``--token-file`` when given, and makes a token for a new head. An
explicit ``RAY_AUTH_MODE`` (e.g. ``disabled``) is respected as it is.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from edgerep.errors import EdgerepError

MODE = "RAY_AUTH_MODE"


def default_token_path() -> Path:
    """Where Ray looks for the token when no variable names one: ``~/.ray/auth_token``."""
    return Path.home() / ".ray" / "auth_token"


def use_token(create: bool, token_file: str | os.PathLike[str] | None = None) -> str:
    """Turn Ray's token authentication on for this process and the nodes it starts; returns, in words,
    where the token is (or that authentication is off by ``RAY_AUTH_MODE``).

    ``create``: make a token at ``~/.ray/auth_token`` (mode 0600) when none is found (a new head).
    ``EdgerepError`` naming ``--token-file`` when a token is needed and there is none.
    """
    mode = os.environ.get(MODE)
    if mode is not None and mode.lower() != "token":
        return f"token authentication off ({MODE}={mode})"
    where: str
    if token_file is not None:
        p = Path(token_file).expanduser()
        if not p.is_file() or not p.read_text().strip():
            raise EdgerepError(f"--token-file {token_file}: no token there (a file holding the head's token)")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(p.resolve())
        os.environ.pop("RAY_AUTH_TOKEN", None)
        where = f"token file {p}"
    elif os.environ.get("RAY_AUTH_TOKEN"):
        where = "token from RAY_AUTH_TOKEN"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        p = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
        if not p.is_file():
            raise EdgerepError(f"RAY_AUTH_TOKEN_PATH={p}: no such file", hint="or pass --token-file")
        where = f"token file {p}"
    else:
        p = default_token_path()
        if not p.is_file() or not p.read_text().strip():
            if not create:
                raise EdgerepError("Ray token authentication is on and no token is here (no --token-file, "
                                   f"RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or {p})",
                                   hint="copy the token file `edgerep fleet up` printed and pass --token-file; "
                                        f"{MODE}=disabled joins a cluster without authentication")
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            where = f"new token file {p}"
        else:
            where = f"token file {p}"
    os.environ[MODE] = "token"
    _refresh_ray_config()
    return f"token authentication on ({where})"


def _refresh_ray_config() -> None:
    """Make an already imported Ray read the mode again (it caches its config at import)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # Ray not installed, or one without token authentication: its nodes read the environment
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


__all__ = ["default_token_path", "use_token"]
