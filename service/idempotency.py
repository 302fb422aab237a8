"""Idempotent creation: a client that sends `Idempotency-Key: <key>` with a request that stores
complaints (`POST /v1/classify` with `store`, Open311 `POST requests`) and retries it, because
the answer was lost after the commit, gets the first request's ids back instead of a second
complaint.

The key is scoped to the caller (its API key's name; all anonymous callers share one scope)
and stored hashed, one row per item (`<digest>:<item>`, unique: migration 0003), so a retry
racing the first attempt loses at the database, not in a check-then-insert window. A key sent
again with other texts is refused (422): it names another request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError

from .errors import ApiError
from .keys import ApiKey
from .storage import NewRequest, Store

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_CHARS = 255
_VALID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CHARS}}}")


def idempotency_key(request: Request, caller: ApiKey | None) -> str | None:
    """The digest naming the caller's `Idempotency-Key` (None without the header); 422 for a
    key that is not 1 to 255 visible ASCII characters."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    if not _VALID.fullmatch(value):
        raise ApiError(
            422,
            "validation_error",
            f"the {HEADER} header must be 1 to {MAX_CHARS} visible ASCII characters",
        )
    scope = caller.name if caller is not None else ""
    return hashlib.sha256(f"{scope}\n{value}".encode()).hexdigest()


def save_once(
    store: Store, records: Sequence[NewRequest], key: str | None
) -> tuple[list[str], bool]:
    """Store `records` and return (their ids, False); with a `key` already used, store nothing
    and return (the first request's ids, True). Blocking: run it in a worker thread."""
    if key is None:
        return store.save_requests(list(records)), False
    earlier = _earlier(store, key, records)
    if earlier is not None:
        return earlier, True
    keyed = [
        dataclasses.replace(record, idempotency_key=item)
        for record, item in zip(records, _items(key, len(records)), strict=True)
    ]
    try:
        return store.save_requests(keyed), False
    except IntegrityError:
        # A concurrent retry with the same key committed first: answer with its rows.
        earlier = _earlier(store, key, records)
        if earlier is None:
            raise
        return earlier, True


def mark_replayed(response: Response, replayed: bool) -> None:
    """Tell the client the answer names requests stored by an earlier attempt."""
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"


def _items(key: str, count: int) -> list[str]:
    return [f"{key}:{i}" for i in range(count)]


def _earlier(store: Store, key: str, records: Sequence[NewRequest]) -> list[str] | None:
    """The ids stored under `key`, or None; 422 when they were stored for other texts."""
    # One key more than this request has items: a first request with more items shows.
    found = store.by_idempotency_keys(_items(key, len(records) + 1))
    if not found:
        return None
    rows = [found.get(item) for item in _items(key, len(records))]
    same = len(found) == len(records) and all(
        row is not None and row.text == record.text
        for row, record in zip(rows, records, strict=True)
    )
    if not same:
        raise ApiError(
            422,
            "validation_error",
            f"this {HEADER} was first sent with another request; use a new key for a new one",
        )
    return [row.id for row in rows if row is not None]
