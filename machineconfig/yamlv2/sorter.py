"""yaml.v2's map key order (sorter.go): "natural" order, digit runs compared as numbers."""
from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Iterable

log = logging.getLogger(__name__)


def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


def _is_digit(c: str) -> bool:
    return unicodedata.category(c) == "Nd"


def _key_less(a: str, b: str) -> bool:
    for i in range(min(len(a), len(b))):
        ca, cb = a[i], b[i]
        if ca == cb:
            continue
        al, bl = _is_letter(ca), _is_letter(cb)
        if al and bl:
            return ca < cb
        if al or bl:
            return bl
        an = bn = 0
        if ca == "0" or cb == "0":
            j = i - 1
            while j >= 0 and _is_digit(a[j]):
                if a[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(a) and _is_digit(a[ai]):
            an = an * 10 + ord(a[ai]) - 48
            ai += 1
        bi = i
        while bi < len(b) and _is_digit(b[bi]):
            bn = bn * 10 + ord(b[bi]) - 48
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ca < cb
    return len(a) < len(b)


_LETTER_KEYS = re.compile(r"[A-Za-z]*")


def sorted_keys(keys: Iterable[str]) -> list[str]:
    """Map keys in yaml.v2's "natural" order."""
    keys = list(keys)
    if all(_LETTER_KEYS.fullmatch(k) for k in keys):
        return sorted(keys)  # letters only: natural order is code-point order

    def cmp(a: str, b: str) -> int:
        return -1 if _key_less(a, b) else (1 if _key_less(b, a) else 0)
    return sorted(keys, key=functools.cmp_to_key(cmp))

