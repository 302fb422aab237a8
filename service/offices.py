"""The offices file (`ADUAN_OFFICES_FILE`): who receives routed complaints, where their webhook
is, how soon they must answer, and which keys are their staff. Read again when it changes (one
`stat` per lookup, as the keys file), validated with errors that name the line.

    offices:
      - name: Dinas Lingkungan Hidup        # an agency label, or "Kelurahan Darmo"
        webhook: https://dlh.example.go.id/aduan
        secret: whsec_c2VjcmV0LWtleS1mb3ItZGxoLW9mZmljZQ==
        sla_hours: 24
        resolution_hours: 168
        staff: [siti, budi]

A key whose name is listed under `staff` is that office's: it sees and acts on the office's
complaints only (the review queue is closed to it).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

DEFAULT_SLA_HOURS = 24.0
# The intake system's webhook (`intake:` in the file) is kept as an office of this name.
INTAKE = "(intake)"
WHSEC = "whsec_"


def webhook_url(value: str) -> str:
    """`value` if httpx can POST to it: http(s), a host, a port that is a number, a name that
    encodes to IDNA. Checked at load, so a bad URL is refused with its line instead of
    failing every delivery attempt later."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"webhook is not a usable URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise ValueError("webhook must be an http(s) URL")
    if not url.host:
        raise ValueError("webhook URL has no host")
    try:
        ipaddress.ip_address(url.host)
    except ValueError:
        try:
            url.host.encode("idna")
        except UnicodeError:
            raise ValueError(f"webhook host {url.host!r} is not a valid host name") from None
    return value


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_transport(offices: Iterable[Office], path: Path | str | None = None) -> list[str]:
    """Warn about (and return) the offices whose webhook would carry complaint texts and
    locations (personal data) unencrypted, over http:// to a host that is not this machine,
    or unsigned (no `secret`: the receiver cannot tell them from forgeries). Allowed, as
    some offices' systems are only reachable so inside the city's network, but said."""
    warned = []
    for office in offices:
        if not office.webhook:
            continue
        name = "intake" if office.name == INTAKE else repr(office.name)
        url = httpx.URL(office.webhook)
        if url.scheme != "https" and not _loopback(url.host):
            log.warning(
                "offices file %s: %s webhook is plain http to %s: complaint texts and "
                "locations would travel unencrypted; use https",
                path,
                name,
                url.host,
            )
            warned.append(office.name)
        if not office.secret:
            log.warning(
                "offices file %s: %s webhook has no secret: its events go out unsigned",
                path,
                name,
            )
            warned.append(office.name)
    return list(dict.fromkeys(warned))


class OfficesFileError(ValueError):
    """An offices file that cannot be used; the message names the file and line."""


class Office(BaseModel):
    """One office: a model agency label or a concrete kelurahan/kecamatan office."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    webhook: str | None = None
    # Out of repr (and str): a debug line or a traceback's locals must not print the key.
    secret: str | None = Field(None, repr=False)
    sla_hours: float = Field(DEFAULT_SLA_HOURS, gt=0, le=24 * 365)
    resolution_hours: float | None = Field(None, gt=0, le=24 * 3650)
    staff: tuple[str, ...] = ()

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else webhook_url(value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(WHSEC):
            raise ValueError("secret must be a Standard Webhooks secret: whsec_<base64>")
        try:
            raw = base64.b64decode(value.removeprefix(WHSEC), validate=True)
        except binascii.Error:
            raise ValueError("secret must be whsec_ followed by base64") from None
        if not 24 <= len(raw) <= 64:
            raise ValueError("secret must hold 24 to 64 bytes (the spec's range)")
        return value


class Intake(BaseModel):
    """The intake system (the citizens' app) that wants to hear of status changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: str
    secret: str | None = Field(None, repr=False)


class OfficesDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offices: list[Office] = Field(default_factory=list)
    intake: Intake | None = None


def _node_at(node: yaml.Node | None, loc: Iterable[Any]) -> yaml.Node | None:
    """The YAML node a pydantic error location points at (as deep as it exists)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is None:
                return node
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def parse_offices(text: str, path: Path | str) -> list[Office]:
    """The offices of a file's text; `OfficesFileError` names the line that is wrong."""
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text) if root is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}: line {mark.line + 1}" if mark else str(path)
        raise OfficesFileError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise OfficesFileError(f"{path}: line 1: expected a mapping with an 'offices' list")
    try:
        doc = OfficesDoc.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        node = _node_at(root, first["loc"])
        line = node.start_mark.line + 1 if node is not None else 1
        field = ".".join(str(p) for p in first["loc"])
        raise OfficesFileError(f"{path}: line {line}: {field}: {first['msg']}") from exc
    seen: set[str] = set()
    assert isinstance(root, yaml.MappingNode)
    for i, office in enumerate(doc.offices):
        if office.name in seen:
            node = _node_at(root, ("offices", i, "name"))
            line = node.start_mark.line + 1 if node is not None else 1
            raise OfficesFileError(f"{path}: line {line}: office {office.name!r} listed twice")
        seen.add(office.name)
    if doc.intake is not None:
        # Validated as an office's webhook and secret are; kept under a name no office has.
        try:
            intake = Office(name=INTAKE, webhook=doc.intake.webhook, secret=doc.intake.secret)
        except ValidationError as exc:
            node = _node_at(root, ("intake",))
            line = node.start_mark.line + 1 if node is not None else 1
            message = exc.errors()[0]["msg"]
            raise OfficesFileError(f"{path}: line {line}: intake: {message}") from exc
        return [*doc.offices, intake]
    return doc.offices


class OfficeBook:
    """The configured offices, re-read when the file changes. A file that turns unreadable
    keeps the last good set (unlike the keys file, nothing opens up by it) and logs an ERROR;
    `broken` says why meanwhile. `known` names the agencies and units a name may be: an
    office named otherwise is warned about (a typo would never receive anything)."""

    def __init__(self, path: Path | None, known: Collection[str] = ()) -> None:
        self.path = Path(path) if path else None
        self.known = set(known)
        self._offices: dict[str, Office] = {}
        # Every key named staff by any good read of the file in this process: such a key stays
        # restricted when the file later drops it or its office (never an operator by that).
        self._staff_ever: set[str] = set()
        self._stamp: tuple[int, int, int] | None = None
        self.broken: str | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            if not self.path.is_file():
                raise OfficesFileError(f"{self.path}: offices file not found")
            self._refresh(strict=True)

    @classmethod
    def of(cls, offices: Iterable[Office]) -> OfficeBook:
        """A book of fixed offices (tests, commands)."""
        book = cls(None)
        book._offices = {o.name: o for o in offices}
        book._staff_ever = {name for o in offices for name in o.staff}
        return book

    def _refresh(self, strict: bool = False) -> None:
        path = self.path
        if path is None:
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            if self.broken is None:
                self.broken = f"{path}: offices file not found"
                log.error("offices file unusable, keeping the last good one: %s", self.broken)
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                offices = parse_offices(path.read_text(encoding="utf-8"), path)
            except (OSError, UnicodeDecodeError, OfficesFileError) as exc:
                if strict:
                    raise OfficesFileError(str(exc)) from exc
                self.broken, self._stamp = str(exc), stamp
                log.error("offices file unusable, keeping the last good one: %s", exc)
                return
            self._offices, self._stamp, self.broken = {o.name: o for o in offices}, stamp, None
            self._staff_ever |= {name for o in offices for name in o.staff}
            log.info("offices file %s read: %d office(s)", path, len(offices))
            self.warn_unknown()
            warn_transport(offices, path)

    def warn_unknown(self, known: Collection[str] | None = None) -> list[str]:
        """Warn about (and return) the offices named neither an agency label nor a known
        kelurahan/kecamatan office: a typo there would never receive anything."""
        if known is not None:
            self.known = set(known)
        if not self.known:
            return []
        unknown = [n for n in self._offices if n not in self.known and n != INTAKE]
        for name in unknown:
            log.warning(
                "offices file %s: %r is no agency label nor known kelurahan/kecamatan "
                "office; nothing will be routed to it",
                self.path,
                name,
            )
        return unknown

    def all(self) -> list[Office]:
        """The offices (not the intake system's webhook)."""
        self._refresh()
        return [o for o in self._offices.values() if o.name != INTAKE]

    def get(self, name: str | None) -> Office | None:
        self._refresh()
        return self._offices.get(name) if name else None

    def offices_of(self, key_name: str) -> list[str]:
        """The offices whose staff the key named `key_name` is (empty: not office staff)."""
        self._refresh()
        return [o.name for o in self._offices.values() if key_name in o.staff]

    def is_staff(self, key_name: str) -> bool:
        """Whether the key named `key_name` is, or was in an earlier good read of the offices
        file, an office's staff: such a key is never an operator (fails closed when the file
        drops the key or renames its office; with no offices at all it is simply no staff)."""
        self._refresh()
        return key_name in self._staff_ever

    def sla_hours(self, name: str | None) -> float:
        office = self.get(name)
        return office.sla_hours if office is not None else DEFAULT_SLA_HOURS


def known_names(
    agencies: Iterable[str], kelurahans: Iterable[str], kecamatans: Iterable[str]
) -> set[str]:
    """Every name an office may have: agency labels and the concrete unit offices."""
    return {
        *agencies,
        *(f"Kelurahan {k}" for k in kelurahans),
        *(f"Kecamatan {k}" for k in kecamatans),
    }
