"""Text normalisation shared by training and serving.

The same function runs on every training row and every request, so a model never sees text
shaped differently from what it was trained on.
"""

from __future__ import annotations

import re

import ftfy

# Masks follow the tokens already used in the Surabaya export, so masked training text and
# masked request text look the same.
PHONE_MASK = "[TELEPON]"
NIK_MASK = "[NIK]"
EMAIL_MASK = "[EMAIL]"

# Matches start only where a token starts (the lookbehind): without it a long run of word
# characters with no "@" costs quadratic time (0.4 s for 10,000 characters, a denial of
# service through /v1/classify). Same matches: the leftmost match starts at a token start.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# NIK (identity number) and KK (family card) numbers are exactly 16 digits.
_NIK = re.compile(r"(?<!\d)\d{16}(?!\d)")
# Indonesian phone numbers: +62 / 62 / 0 followed by 8-13 digits, optionally split by
# spaces, dots or dashes ("0812-3456-7890", "+62 812 3456 789").
_PHONE = re.compile(r"(?<![\w+])(?:\+62|62|0)[\s.-]?8\d{1,3}(?:[\s.-]?\d{2,5}){2,4}(?!\d)")
_SPACE = re.compile(r"\s+")
# A text longer than this is a broken row, not a complaint (the longest real one has 8,417
# characters; the service refuses more than 10,000): typically an unclosed quote that
# swallowed the rows after it. Training refuses such a file; backfills send the row to the
# errors file.
MAX_TEXT_CHARS = 100_000


def undecodable(value: str) -> bool:
    """Whether `value` holds bytes that were not UTF-8 (surrogateescape turns them into lone
    surrogates)."""
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def mask_personal_data(text: str) -> str:
    """Replace e-mail addresses, 16-digit NIK/KK numbers and phone numbers with mask tokens."""
    text = _EMAIL.sub(EMAIL_MASK, text)
    text = _NIK.sub(NIK_MASK, text)
    return _PHONE.sub(PHONE_MASK, text)


def normalize_text(text: str) -> str:
    """Repair mojibake, mask personal data and collapse whitespace.

    Case is kept: the models decide for themselves whether to lowercase.
    """
    text = ftfy.fix_text(text, normalization="NFKC")
    text = mask_personal_data(text)
    return _SPACE.sub(" ", text).strip()
