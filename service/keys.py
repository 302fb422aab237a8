"""API keys: who may call what. Keys are kept as SHA-256 hashes, carry scopes, and come from
the environment (`ADUAN_API_KEYS`, `ADUAN_OPERATOR_KEYS`, `ADUAN_ADMIN_KEYS`) and an optional
keys file that is read again whenever it changes, so a key is added or revoked without a
restart.

The keys file holds one key a line, `name scopes hash [rate=N]`, e.g.

    # name   scopes              hash of the key (aduan keys new prints the line)
    siti     operator,classify   sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd6...
    qlue     classify            sha256:...   rate=20

Scopes: `classify` (classify, labels, info, creating Open311 requests), `operator` (the review
queue, feedback, the workbench, Open311 descriptions), `admin` (`/v1/admin`) and `office`
(beside `operator`: the key is an office's staff, never a full operator, even when the offices
file is unset or no longer lists it; docs/followup.md). Each key holds
the least scope its setting names: one in `ADUAN_API_KEYS` (`key` or `name:key`) holds
`classify` only (an intake partner's key reads no stored complaint), one in
`ADUAN_OPERATOR_KEYS` holds `operator`, one in `ADUAN_ADMIN_KEYS` `admin`; a key listed in
several settings holds their scopes together. Any may be given hashed (`name:sha256:<hex>`).

API keys are long random tokens, not passwords, so one SHA-256 is the right hash: it cannot be
reversed for a key with 256 bits of entropy, and it costs a microsecond per request (a slow
password hash would cost every request milliseconds).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CLASSIFY, OPERATOR, ADMIN, OFFICE = "classify", "operator", "admin", "office"
SCOPES = (CLASSIFY, OPERATOR, ADMIN, OFFICE)
PREFIX = "sha256:"
_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_NAMED = re.compile(r"^([A-Za-z0-9_.@-]{1,64}):(.+)$")


class KeysFileError(ValueError):
    """A keys file that cannot be used; the message names the file and line."""


def digest(key: str) -> str:
    """The SHA-256 of a key, as hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_key(key: str) -> str:
    """What the keys file stores for a key: `sha256:<hex>`."""
    return PREFIX + digest(key)


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return "adn_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: str  # SHA-256 of the secret, hex; the secret itself is never kept
    scopes: frozenset[str]
    rate: float | None = None  # requests per second, overriding ADUAN_RATE_LIMIT

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def _secret_digest(secret: str) -> str:
    found = _HASH.match(secret)
    return found.group(1) if found else digest(secret)


def env_keys(entries: str, scopes: frozenset[str]) -> list[ApiKey]:
    """Keys from a comma-separated setting: `key`, `name:key`, `sha256:<hex>` or
    `name:sha256:<hex>`. Unnamed keys are called `key-` and 8 hex digits of their hash."""
    out = []
    for entry in entries.split(","):
        entry = entry.strip()
        if not entry:
            continue
        named = _NAMED.match(entry)
        if _HASH.match(entry) or not named:
            name, secret = None, entry
        else:
            name, secret = named.group(1), named.group(2).strip()
        hashed = _secret_digest(secret)
        out.append(ApiKey(name or f"key-{hashed[:8]}", hashed, scopes))
    return out


def merge_scopes(keys: list[ApiKey]) -> list[ApiKey]:
    """One key per secret: a key listed in several settings holds their scopes together
    (under the name it was first given)."""
    merged: dict[str, ApiKey] = {}
    for key in keys:
        seen = merged.get(key.digest)
        if seen is None:
            merged[key.digest] = key
        else:
            merged[key.digest] = ApiKey(seen.name, seen.digest, seen.scopes | key.scopes, seen.rate)
    return list(merged.values())


def parse_keys_file(text: str, path: Path | str) -> list[ApiKey]:
    """The keys of a keys file; `KeysFileError` names the line that is wrong."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}: line {number}"
        if len(parts) < 3:
            raise KeysFileError(f"{where}: expected 'name scopes sha256:<hex> [rate=N]'")
        name, scopes_text, hashed, *options = parts
        if not _NAME.match(name):
            raise KeysFileError(f"{where}: invalid name {name!r}")
        scopes = frozenset(s.strip() for s in scopes_text.split(",") if s.strip())
        unknown = scopes - set(SCOPES)
        if not scopes or unknown:
            raise KeysFileError(f"{where}: scopes must be among {SCOPES}, got {scopes_text!r}")
        found = _HASH.match(hashed)
        if not found:
            raise KeysFileError(
                f"{where}: the key must be given as its hash, sha256:<64 hex digits> "
                "(never the key itself; `aduan keys hash` makes one)"
            )
        rate = None
        for option in options:
            key, _, value = option.partition("=")
            try:
                if key != "rate":
                    raise ValueError
                rate = float(value)
            except ValueError:
                raise KeysFileError(f"{where}: unknown option {option!r} (rate=N)") from None
        out.append(ApiKey(name, found.group(1), scopes, rate))
    return out


class KeyRing:
    """Every configured key; the keys file is read again when it changes (checked on each
    lookup: one `stat`). A file that turns unreadable or disappears fails closed: none of
    its keys is accepted any more (the last good set would keep revoked keys alive), every
    route stays protected, and each change is logged as an ERROR until the file parses
    again (`broken` says why meanwhile; readiness shows it). The environment's keys are
    read from `settings` (`api_keys`, `operator_keys`, `admin_keys`, `keys_file`)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._env: tuple[str, str, str] | None = None
        self._static: list[ApiKey] = []
        self._from_file: list[ApiKey] = []
        self._stamp: tuple[int, int, int] | None = None
        self.broken: str | None = None  # why the keys file cannot be used, while it cannot
        self._lock = threading.Lock()
        path = self.keys_file
        if path is not None:
            if not path.is_file():
                raise KeysFileError(f"{path}: keys file not found")
            self._refresh(strict=True)

    @property
    def keys_file(self) -> Path | None:
        path = getattr(self.settings, "keys_file", None)
        return Path(path) if path else None

    def _static_keys(self) -> list[ApiKey]:
        settings = self.settings
        env = (
            settings.api_keys,
            getattr(settings, "operator_keys", ""),
            settings.admin_keys,
        )
        if env != self._env:
            found = [
                *env_keys(env[0], frozenset({CLASSIFY})),
                *env_keys(env[1], frozenset({OPERATOR})),
                *env_keys(env[2], frozenset({ADMIN})),
            ]
            self._static, self._env = merge_scopes(found), env
        return self._static

    def _refresh(self, strict: bool = False) -> None:
        path = self.keys_file
        if path is None:
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            if self.broken is None:
                self._fail(f"{path}: keys file not found")
            self._stamp = None
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                keys = parse_keys_file(path.read_text(encoding="utf-8"), path)
            except (OSError, UnicodeDecodeError, KeysFileError) as exc:
                if strict:
                    raise KeysFileError(str(exc)) from exc
                self._fail(str(exc))
                self._stamp = stamp
                return
            self._from_file, self._stamp, self.broken = keys, stamp, None
            log.info("keys file %s read: %d key(s)", path, len(keys))

    def _fail(self, why: str) -> None:
        self._from_file, self.broken = [], why
        log.error(
            "keys file unusable, NONE of its keys is accepted until it is fixed "
            "(the routes stay protected): %s",
            why,
        )

    def keys(self) -> list[ApiKey]:
        self._refresh()
        return self._static_keys() + self._from_file

    def find(self, token: str) -> ApiKey | None:
        """The key a presented secret is, compared in constant time against every key."""
        if not token:
            return None
        presented = digest(token).encode()
        found = None
        for key in self.keys():
            if hmac.compare_digest(presented, key.digest.encode()):
                found = key
        return found

    def any_with(self, scope: str) -> bool:
        """Whether a key with `scope` is configured; a broken keys file counts as holding
        every scope, so no route it guarded turns open or off meanwhile."""
        keys = self.keys()
        return self.broken is not None or any(key.allows(scope) for key in keys)

    def protects_api(self) -> bool:
        """`/v1` needs a key as soon as any classify or operator key exists (or a keys file
        is configured but broken); admin keys alone leave it open (as `ADUAN_ADMIN_KEYS`
        always did)."""
        keys = self.keys()
        return self.broken is not None or any(
            k.allows(CLASSIFY) or k.allows(OPERATOR) for k in keys
        )
