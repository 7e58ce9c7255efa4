"""The built-in DLP detectors: where each finds sensitive data in one string.

Each :class:`Builtin` has

- ``gate``: an RE2 pattern (ASCII, never matching NUL) that matches somewhere in every string in
  which ``find`` can find anything, and also in that string's JSON encoding. The scanner runs
  the gates of all enabled detectors as one alternation over a whole serialized payload, and
  calls ``find`` only on strings its gate hits, so a clean payload costs one linear DFA pass;
- ``find``: the precise search, returning the spans to report (and redact). Patterns narrow the
  candidates, then checksums and context decide (Luhn for cards, mod-97 for IBANs, the decoded
  header for JWTs, valid number ranges for SSNs, entropy for tokens);
- ``under_key``: optionally, whether a whole value is sensitive because of the object key it sits
  under (``{"ssn": "123456789"}``, ``{"api_key": "..."}``, ``{"mrn": 1234567}``), for values
  that would be too ambiguous without that key;
- ``numeric``: whether ``find`` also applies to integers, as their decimal text.

The precise patterns use Python's ``re`` (they need lookbehind) and are written to run in linear
time: every pattern starts at a boundary assertion of fixed width (the phone and card patterns
assert it just after their first character, so that the engine skips straight to the characters
a match can start with), every repetition is bounded or over a character class that the
following token cannot match, and there are no nested quantifiers over overlapping classes, so a
failed attempt at one position costs at most a repetition bound and no input makes them
backtrack super-linearly. The adversarial tests hold them to that. Custom patterns from the
policy are RE2, which is linear by construction.

Used by the scanner (``mas_sidecar.dlp.scanner``).
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import orjson

Span = tuple[int, int]
_A = re.ASCII
_I = re.ASCII | re.IGNORECASE


@dataclass(frozen=True)
class Builtin:
    """One built-in detector (see the module docstring for the fields' contract)."""

    name: str
    gate: str
    find: Callable[[str], list[Span]]
    under_key: Callable[[str, str], bool] | None = None
    numeric: bool = False


def normalize_key(key: str) -> str:
    """``"X-Api-Key"`` -> ``"xapikey"``: lowercase letters and digits only."""
    return "".join(ch for ch in key.lower() if ch.isascii() and ch.isalnum())


def _spans(pattern: re.Pattern[str], text: str, group: int = 0) -> list[Span]:
    return [match.span(group) for match in pattern.finditer(text)]


def _shannon_entropy(text: str) -> float:
    length = len(text)
    return -sum(n / length * math.log2(n / length) for n in Counter(text).values())


# --- email ----------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])",
    _A,
)


def _find_email(text: str) -> list[Span]:
    at = text.find("@")
    if at < 0:
        return []
    # A match's "@" is at most 64 characters after its start (and the lookbehind still sees the
    # characters before the position the search starts from).
    return [match.span() for match in _EMAIL.finditer(text, max(0, at - 64))]


# --- phone ----------------------------------------------------------------------------------

# International: "+", a country code and 8-15 digits in all, single separators or parentheses.
_PHONE_INTERNATIONAL = re.compile(r"\+(?<![\w+]\+)[1-9](?:[ .-]?\(?\d\)?){7,14}(?!\d)", _A)
# National: only the usual groupings, so dates, versions, IP addresses and ids stay out.
# The first character is matched before the boundary is asserted, and each grouping checks it.
_PHONE_NATIONAL = re.compile(
    r"[\d(](?<![\w.+/:-].)(?:"
    r"(?<=\()\d{2,5}\)[ .-]?\d{3,4}[ .-]\d{3,4}"  # (415) 555-2671, (020) 7946 0958
    r"|(?<=\d)\d{2}([.-])\d{3}\1\d{4}"  # 415-555-2671, 415.555.2671
    r"|(?<=\d)\d{2} \d{3} \d{4}"  # 415 555 2671
    r"|(?<=0)\d{1,4}[ -]\d{3,4}[ -]\d{3,4}"  # 020 7946 0958, 030-1234-5678
    r"|(?<=0)[1-9](?:[ .]\d{2}){4}"  # 01 23 45 67 89
    r")(?![\w-]|[.:/]\d)",
    _A,
)


def _find_phone(text: str) -> list[Span]:
    found = _spans(_PHONE_INTERNATIONAL, text) if "+" in text else []
    return found + _spans(_PHONE_NATIONAL, text)


# --- us_ssn ---------------------------------------------------------------------------------

_SSN_SEPARATED = re.compile(r"(?<![\w.-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-]|\.\d)", _A)
_SSN_CONTEXT = re.compile(
    r"(?<![a-z0-9])(?:ssn|social[ _-]?security(?:[ _-]?(?:number|num|no))?)"
    r"[^a-z0-9]{0,4}(?:is[^a-z0-9]{1,3})?(\d{3})[- ]?(\d{2})[- ]?(\d{4})(?![\w-])",
    _I,
)
_SSN_VALUE = re.compile(r"\s{0,8}(\d{3})[- ]?(\d{2})[- ]?(\d{4})\s{0,8}", _A)


def _valid_ssn(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _find_ssn(text: str) -> list[Span]:
    found = [
        m.span()
        for m in _SSN_SEPARATED.finditer(text)
        if _valid_ssn(m.group(1), m.group(3), m.group(4))
    ]
    found += [
        (m.start(1), m.end(3))
        for m in _SSN_CONTEXT.finditer(text)
        if _valid_ssn(m.group(1), m.group(2), m.group(3))
    ]
    return found


def _is_ssn_key(key: str) -> bool:
    return key.endswith("ssn") or "socialsecurity" in key


def _ssn_under_key(key: str, value: str) -> bool:
    if not _is_ssn_key(key):
        return False
    if value.isdigit() and len(value) < 9:  # an integer that lost its leading zeros
        value = value.zfill(9)
    match = _SSN_VALUE.fullmatch(value)
    return match is not None and _valid_ssn(match.group(1), match.group(2), match.group(3))


# --- payment_card ---------------------------------------------------------------------------

_CARD = re.compile(r"\d(?<![\w.+-]\d)(?:[ -]?\d){12,18}(?![\w-]|\.\d)", _A)
_CARD_GROUP = re.compile(r"\d+", _A)


# Every second digit from the right is doubled, and a two-digit result counts as its digit sum.
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits."""
    summed = (digits[-1::-2] + digits[-2::-2].translate(_LUHN_DOUBLED)).encode("ascii")
    return (sum(summed) - 48 * len(summed)) % 10 == 0


def _card_number(digits: str) -> bool:
    return (
        13 <= len(digits) <= 19
        and digits[0] in "23456"  # the major networks' ranges; timestamps start with 1
        and digits.count(digits[0]) != len(digits)
        and luhn_valid(digits)
    )


def _card_windows(groups: list[Span]) -> list[Span]:
    """Runs of a candidate's digit groups of at least 3 digits each (a card followed by an
    expiry date, or preceded by another number), longest first."""
    runs: list[tuple[int, int, int]] = []
    for first, (start, _) in enumerate(groups):
        digits = 0
        for group_start, group_end in groups[first:]:
            if group_end - group_start < 3 or digits + group_end - group_start > 19:
                break
            digits += group_end - group_start
            if digits >= 13:
                runs.append((start, group_end, digits))
    runs.sort(key=lambda run: (-run[2], run[0]))
    return [(start, end) for start, end, _ in runs]


def _card_digits(text: str, start: int, end: int) -> bool:
    return _card_number(text[start:end].replace(" ", "").replace("-", ""))


def _find_card(text: str) -> list[Span]:
    found: list[Span] = []
    for match in _CARD.finditer(text):
        if _card_digits(text, *match.span()):
            found.append(match.span())
            continue
        groups = [g.span() for g in _CARD_GROUP.finditer(text, *match.span())]
        if len(groups) > 1:
            found += [w for w in _card_windows(groups) if _card_digits(text, *w)][:1]
    return found


# --- iban -----------------------------------------------------------------------------------

_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24,
    "XK": 20,
}  # fmt: skip
# A zero-width match at each possible start, so one long candidate cannot hide the next.
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])(?=[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})", _A)
# Exactly as many characters as the country's IBANs have, single spaces allowed between them.
_IBAN_BODIES = {
    length: re.compile(rf"[A-Z0-9](?: ?[A-Z0-9]){{{length - 1}}}(?![A-Za-z0-9])", _A)
    for length in set(_IBAN_LENGTHS.values())
}


def iban_valid(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97 checksum of an IBAN without spaces."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _find_iban(text: str) -> list[Span]:
    found: list[Span] = []
    covered = 0
    for match in _IBAN_START.finditer(text):
        start = match.start()
        length = _IBAN_LENGTHS.get(text[start : start + 2])
        if start < covered or length is None:
            continue
        body = _IBAN_BODIES[length].match(text, start)
        if body is not None and iban_valid(body.group().replace(" ", "")):
            found.append(body.span())
            covered = body.end()
    return found


# --- cloud_api_key --------------------------------------------------------------------------

_CLOUD_KEYS = (
    ("AKIA", re.compile(r"(?<![A-Za-z0-9])AKIA[A-Z0-9]{16}(?![A-Za-z0-9])", _A)),
    ("ASIA", re.compile(r"(?<![A-Za-z0-9])ASIA[A-Z0-9]{16}(?![A-Za-z0-9])", _A)),
    ("AIza", re.compile(r"(?<![\w-])AIza[\w-]{35}(?![\w-])", _A)),
    ("gh", re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,251}(?![A-Za-z0-9_])", _A)),
    ("github_pat_", re.compile(r"(?<![A-Za-z0-9_])github_pat_\w{22,255}(?!\w)", _A)),
    ("xox", re.compile(r"(?<![A-Za-z0-9-])xox[baprs]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])", _A)),
    ("k_live_", re.compile(r"(?<![A-Za-z0-9_])[rs]k_live_[A-Za-z0-9]{16,247}(?![A-Za-z0-9])", _A)),
)
_OPENAI_KEY = re.compile(r"(?<![\w-])sk-([\w-]{32,250})(?![\w-])", _A)


def _mixed_token(token: str) -> bool:
    """Has upper- and lowercase letters and digits: random, unlike a slug-of-words."""
    return (
        any(c.isdigit() for c in token)
        and any(c.isupper() for c in token)
        and any(c.islower() for c in token)
    )


def _find_cloud_key(text: str) -> list[Span]:
    found = [span for literal, p in _CLOUD_KEYS if literal in text for span in _spans(p, text)]
    if "sk-" in text:
        found += [m.span() for m in _OPENAI_KEY.finditer(text) if _mixed_token(m.group(1))]
    return found


# --- generic_api_key ------------------------------------------------------------------------

_PASSWORD_NAMES = ("password", "passwd", "passphrase", "pwd")
_TOKEN_NAMES = (
    "apikey", "apisecret", "apitoken", "secret", "secretkey", "clientsecret", "accesskey",
    "accesskeyid", "accesstoken", "refreshtoken", "authtoken", "sessiontoken", "token",
    "privatekey", "signingkey", "encryptionkey", "credential", "credentials",
)  # fmt: skip
# An identifier in free text must also hold one of the generic gate's words.
_SECRET_WORD = re.compile(r"key|secret|token|passw|passphrase|pwd|credential", _I)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-+/.~=]{16,}", _A)
# `identifier = value` / `"identifier": "value"` in free text; the identifier decides.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.-])([A-Za-z][\w.-]{0,63})["']?[ \t]{0,3}[:=][ \t]{0,3}["']?"""
    r"""([\w\-+/.~]{6,512}={0,2})""",
    _A,
)
_BEARER = re.compile(r"(?<![\w-])bearer[ \t]{1,3}([\w\-+/.~]{16,4096}={0,2})", _I)


def _secret_kind(key: str) -> str | None:
    """``"password"`` or ``"token"`` when a normalized key names a secret, else None."""
    if key.endswith(_PASSWORD_NAMES):
        return "password"
    if key.endswith(_TOKEN_NAMES):
        return "token"
    return None


def _token_like(value: str) -> bool:
    """A long, random-looking token: no spaces, letters and digits, >= 3 bits of entropy."""
    return (
        _TOKEN_CHARS.fullmatch(value) is not None
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and _shannon_entropy(value) >= 3.0
    )


def _secret_value(kind: str, value: str) -> bool:
    if kind == "password":
        # NUL stands where the scanner blanked a redaction marker: it separates like a space,
        # so a redacted value does not turn into a password-looking one.
        return (
            len(value) >= 6
            and not any(c.isspace() or c == "\x00" for c in value)
            and len(set(value)) > 1
        )
    return _token_like(value)


def _find_generic_key(text: str) -> list[Span]:
    found: list[Span] = []
    for match in _ASSIGNMENT.finditer(text):
        name, value = match.group(1), match.group(2)
        kind = _secret_kind(normalize_key(name)) if _SECRET_WORD.search(name) else None
        # In prose ("password: expired") a password must hold something besides letters.
        if kind == "password" and value.isalpha():
            continue
        if kind is not None and _secret_value(kind, value):
            found.append(match.span(2))
    found += [m.span(1) for m in _BEARER.finditer(text) if _token_like(m.group(1))]
    return found


def _generic_under_key(key: str, value: str) -> bool:
    kind = _secret_kind(key)
    return kind is not None and _secret_value(kind, value.strip())


# --- private_key ----------------------------------------------------------------------------

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----", _A)
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----", _A)


def _find_private_key(text: str) -> list[Span]:
    """From BEGIN through END; a block without END is redacted to the end of the string."""
    found: list[Span] = []
    position = 0
    while (begin := _PEM_BEGIN.search(text, position)) is not None:
        end = _PEM_END.search(text, begin.end())
        position = end.end() if end is not None else len(text)
        found.append((begin.start(), position))
    return found


# --- jwt ------------------------------------------------------------------------------------

_JWT = re.compile(
    r"(?<![\w-])(eyJ[\w-]{2,4096})\.[\w-]{2,16384}\.[\w-]{0,4096}(?![\w-])",
    _A,
)


def _jwt_header(segment: str) -> bool:
    """Whether a base64url segment decodes to a JSON object with an ``alg``."""
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:  # not base64, not UTF-8 or not JSON
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def _find_jwt(text: str) -> list[Span]:
    return (
        [m.span() for m in _JWT.finditer(text) if _jwt_header(m.group(1))] if "eyJ" in text else []
    )


# --- medical_record_number ------------------------------------------------------------------

_MRN_CONTEXT = re.compile(
    r"(?<![a-z0-9])(?:mrn|med(?:ical)?[ _-]?rec(?:ord)?(?:[ _-]?(?:number|num|no))?)"
    r"[^a-z0-9]{0,4}(?:is[^a-z0-9]{1,3})?([a-z]{0,3}-?\d{5,12})(?![a-z0-9])",
    _I,
)
_MRN_VALUE = re.compile(r"\s{0,8}[A-Za-z]{0,3}-?\d{5,12}\s{0,8}", _A)


def _find_mrn(text: str) -> list[Span]:
    return _spans(_MRN_CONTEXT, text, 1)


def _is_mrn_key(key: str) -> bool:
    return key.endswith("mrn") or "medicalrecord" in key or key.startswith("medrec")


def _mrn_under_key(key: str, value: str) -> bool:
    return _is_mrn_key(key) and _MRN_VALUE.fullmatch(value) is not None


# --- the table ------------------------------------------------------------------------------

# Gates are written to match both a raw string and its JSON encoding (where '"' is '\\"' and a
# tab is '\\t'), so the scanner can also run them over a whole serialized payload.
_SECRET_GATE = (
    r"(?i:(?:key|secret|token|passw|passphrase|pwd|credential)[A-Za-z0-9_.-]{0,63}"
    r"(?:\\?[\"'])?(?: |\t|\\t){0,3}[:=]|bearer(?: |\t|\\t))"
)
BUILTINS: tuple[Builtin, ...] = (
    Builtin("email", r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.[A-Za-z0-9-]", _find_email),
    Builtin(
        "phone",
        r"\+[1-9](?:[ .-]?\(?[0-9]\)?){7}|\([0-9]{2,5}\)[ .-]?[0-9]{3}"
        r"|[0-9]{3}[.-][0-9]{3}[.-][0-9]{4}|[0-9]{3} [0-9]{3} [0-9]{4}"
        r"|0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3}|0[1-9](?:[ .][0-9]{2}){4}",
        _find_phone,
    ),
    Builtin(
        "us_ssn",
        r"[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}|(?i:ssn|social[ _-]?security)",
        _find_ssn,
        under_key=_ssn_under_key,
    ),
    Builtin("payment_card", r"[2-6](?:[ -]?[0-9]){12}", _find_card, numeric=True),
    Builtin("iban", r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11}", _find_iban),
    Builtin(
        "cloud_api_key",
        r"AKIA|ASIA|AIza|gh[pousr]_|github_pat_|xox[baprs]-|k_live_|sk-",
        _find_cloud_key,
    ),
    Builtin("generic_api_key", _SECRET_GATE, _find_generic_key, under_key=_generic_under_key),
    Builtin("private_key", r"PRIVATE KEY", _find_private_key),
    Builtin("jwt", r"eyJ", _find_jwt),
    Builtin(
        "medical_record_number",
        r"(?i:mrn|med(?:ical)?[ _-]?rec)",
        _find_mrn,
        under_key=_mrn_under_key,
    ),
)

# A key gives its values a context only if it ends in one of the words (and identifier
# characters): then the gates above also hit the key in a serialized payload ('"api_key":').
_CONTEXT_KEY = re.compile(
    r"(?:key|secret|token|passw|passphrase|pwd|credential|ssn|social[ _-]?security|mrn"
    r"|med(?:ical)?[ _-]?rec)[A-Za-z0-9_.-]{0,63}\Z",
    _I,
)
_CACHED_KEY_LENGTH = 64


def key_context(key: str) -> str:
    """The normalized key when a value under it may be sensitive because of it, else ``""``."""
    return _cached_key_context(key) if len(key) <= _CACHED_KEY_LENGTH else _key_context(key)


@lru_cache(maxsize=4096)
def _cached_key_context(key: str) -> str:
    return _key_context(key)


def _key_context(key: str) -> str:
    if _CONTEXT_KEY.search(key) is None:
        return ""
    normalized = normalize_key(key)
    if _secret_kind(normalized) or _is_ssn_key(normalized) or _is_mrn_key(normalized):
        return normalized
    return ""
