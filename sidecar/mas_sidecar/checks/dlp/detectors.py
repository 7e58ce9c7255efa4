"""The built-in DLP detectors: where each finds sensitive data in one string.

Each :class:`Builtin` has

- ``gate``: an RE2 pattern (never matching NUL; ASCII but for classes of non-ASCII characters,
  which orjson leaves as they are) that matches somewhere in every string in which ``find`` can
  find anything, and also in that string's JSON encoding. The scanner runs
  the gates of all enabled detectors as one alternation over a whole serialized payload, so a
  clean payload costs one linear DFA pass;
- ``locator``: a tighter RE2 pattern, run over the string itself (:func:`ascii_view`): the
  precise pattern with its lookarounds turned into plain boundary characters, its checksums and
  context rules left out, and some of what the checks need written in (an IBAN's exact length
  for its country, a JWT header long enough to hold ``{"alg":""}``, a token value long enough to
  be one; ``?`` for a non-ASCII character a pattern takes). It matches wherever ``find`` can find
  something, so a string its locator misses is
  not given to ``find`` at all; the scanner runs all enabled locators over a string as one
  ``re2.Set`` pass;
- ``find``: the precise search, returning the spans to report (and redact). Patterns narrow the
  candidates, then checksums and context decide (Luhn for cards, mod-97 for IBANs, the decoded
  header for JWTs, valid number ranges for SSNs, entropy for tokens). Context words, as
  Presidio's recognizers use them to raise their confidence, let a number count in a form that
  would be too ambiguous alone: nine digits after "SSN" or "social security" (also
  ``123.45.6789``), seven to fifteen after "phone" or "tel", a record number after "MRN";
- ``under_key``: optionally, whether a whole value is sensitive because of the object key it sits
  under (``{"ssn": "123456789"}``, ``{"api_key": "..."}``, ``{"mrn": 1234567}``), for values
  that would be too ambiguous without that key, given what :func:`key_context` read in the key
  (:data:`Context`): its last word, in compound keys too (``ssn_number``, ``patientSsnNo``,
  ``phoneNumber``, ``Social Security Number``);
- ``numeric``: whether ``find`` also applies to numbers, as their decimal text.

Cost. The precise patterns use Python's ``re`` (they need lookbehind) and are written to run in
linear time: every repetition is bounded or over a character class that the following token
cannot match, and there are no nested quantifiers over overlapping classes, so a failed attempt
at one position costs at most a repetition bound. That alone is linear but not cheap: ``re``
tries a pattern at every position, 5-130 ns each, and some detectors did Python-level work per
candidate (a mod-97 per IBAN-like start, a Luhn and its digit-group windows per card-like run),
so a megabyte of near-misses cost 0.1-0.8 s. Hence these rules, which keep what is found exactly
what the patterns define:

- a locator that misses (the usual case for text that only looks like data: IBAN-like prefixes
  of a length no country has, ``MRN:`` or ``ssn`` without a number, ``api_key=`` without a value
  long enough, ``eyJ`` without a header) costs the one DFA pass and no Python-level work;
- a string longer than :data:`LONG` characters is searched by ``re`` only in windows around its
  locator's hits (found by the RE2 DFA at about 1.5 ns a byte; hits less than 64 characters
  apart come as one, so dense candidates cost one call). For the detectors whose pattern
  matches are all findings or cannot overlap (email, phone, SSN, cloud keys, medical record
  numbers, card numbers in their usual groupings, and IBANs in printed groups: there a match is
  a start's first letter, the candidate a lookahead, so every start is tried) a window reaches
  the longest match on both sides, overlapping windows merge, and each is searched with
  ``endpos`` that far past its end: every match lies in one window and
  ``re`` sees the same text around it as in the whole string. Where a match that is then
  rejected can hide a later one overlapping it (an ``identifier = value`` whose value runs into
  the next assignment, a JWT candidate whose last segments start the next one, an IBAN start
  inside a found one), a window is instead a whole run of the characters such matches consist
  of (:func:`chain_pattern`): nothing crosses its ends, so searching it alone finds what a
  search of the whole string does;
- candidates are checked once each and never re-scanned from inside: ``finditer`` resumes after
  a match; card numbers are tried only at the starts of space-separated digit groups
  (:func:`_find_card_runs`), and a run that is one digit repeated is dropped whole; IBAN candidates
  are collected in C and checked once per distinct text (:func:`_find_iban`,
  :func:`_find_iban_grouped`); card candidates,
  JWT headers and token values are checked once per distinct text in a string, so text made of
  one candidate over and over costs one check (the results are kept only while that string is
  scanned: they hold the data).

So a string's Python-level work is bounded by its locator hits and the windows around them,
which the precise patterns search once. Text that hits no locator costs what clean text costs
(about 2 µs/KB, serialization and DFA passes); text that is nothing but candidates that pass a
locator and then fail a check ("AT12 " repeated: IBAN-shaped, of a length Austria has; card-like
digit groups that fail Luhn) is the worst case, about 0.2-1 µs per candidate or 30-100 µs/KB;
text that is nothing but real findings costs about as much per finding (each is also redacted).
Custom patterns from the policy are RE2, which is linear by construction.

Used by the scanner (``mas_sidecar.checks.dlp.scanner``).
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress
from operator import methodcaller
from typing import Any

import orjson
import re2

from mas_core.policy.dlp import re2_options

Span = tuple[int, int]
# What a key tells of the values under it: the kinds of data they may be because of it, of
# "ssn", "mrn", "phone", "password" and "token" (empty: nothing).
Context = frozenset[str]
NO_CONTEXT: Context = frozenset()
_A = re.ASCII
_I = re.ASCII | re.IGNORECASE
LONG = 256  # longer strings are searched only in windows around their locator's hits
_NEARBY = 64
_RE2_MEMORY = 32 << 20


@dataclass(frozen=True)
class Builtin:
    """One built-in detector (see the module docstring for the fields' contract)."""

    name: str
    gate: str
    locator: str
    find: Callable[[str], list[Span]]
    under_key: Callable[[Context, str], bool] | None = None
    numeric: bool = False


def compile_re2(pattern: str) -> Any:
    """An RE2 pattern with room for its DFA (so it does not fall back to the slower NFA)."""
    options = re2_options()
    options.max_mem = _RE2_MEMORY
    return re2.compile(pattern, options)


def ascii_view(text: str) -> bytes:
    """``text`` as one byte per character, every non-ASCII character as ``?``: what locators
    search. Offsets are the string's own, and a locator takes ``?`` wherever its precise pattern
    takes a non-ASCII character (a negated class, the letters of an internationalised address,
    a Unicode dash between digit groups)."""
    return text.encode("ascii", "replace")


def normalize_key(key: str) -> str:
    """``"X-Api-Key"`` -> ``"xapikey"``: lowercase letters and digits only."""
    return key.lower().encode("ascii", "ignore").translate(None, _NOT_ALNUM).decode("ascii")


_NOT_ALNUM = bytes(sorted(set(range(256)) - set(b"abcdefghijklmnopqrstuvwxyz0123456789")))


def _shannon_entropy(text: str) -> float:
    length = len(text)
    return -sum(n / length * math.log2(n / length) for n in Counter(text).values())


class _Windows:
    """Where a detector's patterns are searched in a string: around its locator's hits."""

    def __init__(self, locator: str, longest: int, ahead: int) -> None:
        # Hits less than _NEARBY characters apart come as one (text dense with candidates
        # costs one call, not one per candidate).
        self.hits = compile_re2(f"(?:{locator})(?:(?s:.){{0,{_NEARBY}}}(?:{locator}))*")
        self.longest = longest  # no match of the detector's patterns is longer
        self.ahead = ahead  # how far past a match its lookaheads look

    def of(self, text: str) -> list[Span] | None:
        """Merged windows reaching ``longest`` around the hits; None (all of it) for a short
        string."""
        if len(text) <= LONG:
            return None
        windows: list[Span] = []
        for hit in self.hits.finditer(ascii_view(text)):
            start, end = hit.start() - self.longest, hit.end() + self.longest
            if windows and start <= windows[-1][1]:
                windows[-1] = (windows[-1][0], end)
            else:
                windows.append((max(start, 0), end))
        return windows

    def finditer(
        self, pattern: re.Pattern[str], text: str, windows: list[Span] | None
    ) -> Iterator[re.Match[str]]:
        """``pattern.finditer(text)``, for the matches that start in ``windows``."""
        if windows is None:
            return pattern.finditer(text)
        return self._windowed(pattern, text, windows)

    def searches(self, text: str, windows: list[Span] | None) -> list[tuple[int, int, int]]:
        """``(start, end, stop)`` per window: its matches start between ``start`` and ``end``,
        and are searched for in the text up to ``stop``; all of it for None."""
        if windows is None:
            return [(0, len(text), len(text))]
        reach = self.longest + self.ahead
        return [(start, end, min(len(text), end + reach)) for start, end in windows]

    def _windowed(
        self, pattern: re.Pattern[str], text: str, windows: list[Span]
    ) -> Iterator[re.Match[str]]:
        for start, end, stop in self.searches(text, windows):
            for match in pattern.finditer(text, start, stop):
                if match.start() >= end:
                    break
                yield match


def chain_pattern(chain: str, locator: str) -> Any:
    """An RE2 pattern for the runs of ``chain`` (a character class) that hold a ``locator``
    hit, each whole, together with the next such runs if only other characters lie between:
    ``C*(?:L)C*(?:[^C]+C*(?:L)C*)*``. One hit then covers a stretch of nearby candidates."""
    run, other = f"{chain}*", f"[^{chain[1:-1]}]+"
    one = f"{run}(?:{locator}){run}"
    return compile_re2(f"{one}(?:{other}{one})*")


def _chains(chains: Any, text: str) -> list[Span] | None:
    """The stretches that ``chains`` (a :func:`chain_pattern`) finds: each starts and ends
    with a run of its characters, whole. None (all of it) for a short string."""
    if len(text) <= LONG:
        return None
    return [hit.span() for hit in chains.finditer(ascii_view(text))]


def _in_chains(
    pattern: re.Pattern[str], text: str, chains: list[Span] | None
) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` for a pattern that only matches inside ``chains``."""
    if chains is None:
        return pattern.finditer(text)
    return (
        match
        for start, end in chains
        for match in pattern.finditer(text, start, min(len(text), end + 1))
    )


def _context_word(words: tuple[str, ...]) -> str:
    """A ``re`` pattern for one of ``words`` (patterns, each starting with a lowercase letter,
    matched in any case) where a word starts: after a character that is not a letter or digit,
    or as a camelCase part (its first letter uppercase after a lowercase one: "patientSSN").

    It starts with the class of the words' first letters, so that ``re`` skips in C to where
    one of them stands; the boundary and the rest of the word are checked from there."""
    firsts = sorted({word[0] for word in words})
    rests = "|".join(f"(?<=[{word[0]}{word[0].upper()}])(?i:{word[1:]})" for word in words)
    return (
        f"[{''.join(firsts)}{''.join(firsts).upper()}]"
        rf"(?:(?<![A-Za-z0-9].)|(?<=[a-z][A-Z]))(?:{rests})"
    )


def _context_word_locator(words: tuple[str, ...]) -> str:
    """The RE2 pattern that matches where :func:`_context_word` does (and the character before)."""
    camel = "|".join(f"{word[0].upper()}(?i:{word[1:]})" for word in words)
    return rf"(?:(?:^|[^A-Za-z0-9])(?i:{'|'.join(words)})|[a-z](?:{camel}))"


# --- email ----------------------------------------------------------------------------------

# Internationalised addresses (RFC 6531: UTF-8 local parts; IDNA domains) hold letters, marks
# and digits of any script: every code point from U+00C0 on, except the blocks of spaces,
# punctuation and symbols (general punctuation, arrows and mathematical operators, CJK
# punctuation, fullwidth ASCII punctuation, specials), so quotes, dashes and spaces around an
# address stay outside it.
_INTERNATIONAL = (
    "\u00b7\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u1fff\u200c\u200d\u2070-\u218f\u2c00-\u2fff"
    "\u3005-\u3007\u3021-\u302f\u3031-\u303c\u3040-\ud7ff\uf900-\ufe0f\ufe20-\ufe2f"
    "\ufe70-\ufefe\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uffef\U00010000-\U0010ffff"
)
_LOCAL_CHARS = rf"A-Za-z0-9._%+\-{_INTERNATIONAL}"
_LABEL_CHARS = rf"A-Za-z0-9\-{_INTERNATIONAL}"
_EMAIL = re.compile(
    rf"(?<![{_LOCAL_CHARS}])[{_LOCAL_CHARS}]{{1,64}}@"
    # Labels end in a full stop, or in one of the ideographic ones IDNA reads as a full stop.
    rf"(?:[{_LABEL_CHARS}]{{1,63}}[.\u3002\uff0e\uff61]){{1,8}}"
    rf"(?:[A-Za-z{_INTERNATIONAL}]{{2,24}}|xn--[A-Za-z0-9-]{{1,59}})(?![{_LABEL_CHARS}])",
    _A,
)
# Over the ASCII view every non-ASCII character is '?'.
_EMAIL_LOCATOR = r"[A-Za-z0-9._%+?-]@[A-Za-z0-9?-]+[.?][A-Za-z0-9.?-]*[A-Za-z?]{2}"
_EMAIL_WINDOWS = _Windows(_EMAIL_LOCATOR, 64 + 1 + 8 * 64 + 63, 1)


def _find_email(text: str) -> list[Span]:
    at = text.find("@")
    if at < 0:
        return []
    windows = _EMAIL_WINDOWS.of(text)
    if windows is None:  # a match's "@" is at most 64 characters after its start
        return [match.span() for match in _EMAIL.finditer(text, max(0, at - 64))]
    return [match.span() for match in _EMAIL_WINDOWS.finditer(_EMAIL, text, windows)]


# --- phone ----------------------------------------------------------------------------------

# International: "+", a country code and 8-15 digits in all, single separators or parentheses.
_PHONE_INTERNATIONAL = re.compile(r"\+(?<![\w+]\+)[1-9](?:[ .-]?\(?\d\)?){7,14}(?!\d)", _A)
# National: only the usual groupings, so dates, versions, IP addresses and ids stay out.
# The first character is matched before the boundary is asserted, and each grouping checks it.
_PHONE_NATIONAL = re.compile(
    r"[\d(](?<![\w.+/:-].)(?:"
    r"(?<=\()\d{2,5}\)[ .-]?\d{3,4}[ .-]\d{3,4}"  # (415) 555-2671, (020) 7946 0958
    r"|(?<=\d)\d{2}[ .-]\d{3}[ .-]\d{4}"  # 415-555-2671, 415.555.2671, 415 555-2671
    r"|(?<=1)[ .-](?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4}"  # 1-415-555-2671, 1 (415) 555-2671
    r"|(?<=0)\d{1,4}[ -]\d{3,4}[ -]\d{3,4}"  # 020 7946 0958, 030-1234-5678
    r"|(?<=0)[1-9](?:[ .]\d{2}){4}"  # 01 23 45 67 89
    r")(?![\w-]|[.:/]\d)",
    _A,
)
# After a word that names a phone number ("phone", "tel", "mobile", "fax": standing alone or a
# camelCase part, "number" or "no" after it if need be), 7 to 15 digits in any grouping.
_PHONE_WORDS = ("phone", "tel(?:ephone)?", "mobile", "fax")
_PHONE_WORD_STARTS = ("phone", "tel", "mobile", "fax")
_PHONE_SUFFIX = r"[ _.-]?(?:number|num|nbr|no|nr)"
_PHONE_CONTEXT = re.compile(
    rf"{_context_word(_PHONE_WORDS)}(?i:{_PHONE_SUFFIX})?"
    r"[^0-9A-Za-z]{0,4}(?:(?i:is)[^0-9A-Za-z]{1,3})?(\+?\(?\d(?:[ .()-]{0,2}\d){6,14})"
    r"(?!\w|[-.]\d)",
    _A,
)
# The whole value under a key that names a phone number.
_PHONE_VALUE = re.compile(r"\s{0,8}\+?\(?\d(?:[ .()-]{0,2}\d){6,14}\s{0,8}", _A)
# A key names a phone number if its last word (after a separator or a camelCase break: not
# "hotel" or "microphone") is one of the words, or "cell" with a suffix, followed by a suffix
# ("phone_number", "workTelNo") or a digit or two ("phone2"), then by punctuation at most (not
# by a blanked redaction marker).
_PHONE_KEY = re.compile(
    _context_word((*_PHONE_WORDS, rf"cell(?:phone|(?={_PHONE_SUFFIX}))"))
    + rf"(?:(?i:{_PHONE_SUFFIX})|[0-9]{{1,2}})?[^A-Za-z0-9\x00]*\Z",
    _A,
)
_PHONE_LOCATOR = (
    r"(?:^|[^A-Za-z0-9_+])\+[1-9](?:[ .-]?\(?[0-9]\)?){7,14}(?:[^0-9]|$)"
    r"|(?:^|[^A-Za-z0-9_.+/:-])(?:"
    r"\([0-9]{2,5}\)[ .-]?[0-9]{3,4}[ .-][0-9]{3,4}"
    r"|[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4}"
    r"|1[ .-](?:\([0-9]{3}\)|[0-9]{3})[ .-]?[0-9]{3}[ .-][0-9]{4}"
    r"|0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3,4}"
    r"|0[1-9](?:[ .][0-9]{2}){4}"
    r")(?:[^A-Za-z0-9_-]|$)"
    rf"|{_context_word_locator(_PHONE_WORDS)}(?i:{_PHONE_SUFFIX})?[^0-9A-Za-z]{{0,4}}"
    r"(?:(?i:is)[^0-9A-Za-z]{1,3})?"
    r"\+?\(?[0-9](?:[ .()-]{0,2}[0-9]){6}"
)
# "telephone number is ", a plus, a parenthesis and 15 digits with two separators between each.
_PHONE_WINDOWS = _Windows(_PHONE_LOCATOR, 16 + 4 + 5 + 2 + 1 + 14 * 3, 2)


def _find_phone(text: str) -> list[Span]:
    windows = _PHONE_WINDOWS.of(text)
    found = (
        [m.span() for m in _PHONE_WINDOWS.finditer(_PHONE_INTERNATIONAL, text, windows)]
        if "+" in text
        else []
    )
    found += [m.span() for m in _PHONE_WINDOWS.finditer(_PHONE_NATIONAL, text, windows)]
    if windows is None and not any(word in text.lower() for word in _PHONE_WORD_STARTS):
        return found  # a short string without a context word (a long one has its windows)
    return found + [m.span(1) for m in _PHONE_WINDOWS.finditer(_PHONE_CONTEXT, text, windows)]


def _phone_under_key(kinds: Context, value: str) -> bool:
    return "phone" in kinds and _PHONE_VALUE.fullmatch(value) is not None


# --- us_ssn ---------------------------------------------------------------------------------

# Without a context word, only the formatted number: 123-45-6789 or 123 45 6789.
_SSN_SEPARATED = re.compile(r"(?<![\w.-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-]|\.\d)", _A)
# Words that say the number after them is a Social Security number (as a Presidio recognizer's
# context words raise its confidence): "SSN", "SS#", "social security", "Soc. Sec.".
_SSN_WORDS = ("ssn", r"ss\#", "social[ _.-]?security", r"soc\.?[ _-]?sec")
# After a context word (standing alone, or a camelCase part: "patientSSN") and up to 24 other
# characters that are not digits ("number is ", "no.: ", " of the patient: "), and that do not
# run into the number (so "SSN A123456789" is an id), nine digits are an SSN whatever separates
# their groups, if anything does: 123456789, 123.45.6789, 123/45/6789, with en dashes.
_SSN_CONTEXT = re.compile(
    rf"{_context_word(_SSN_WORDS)}(?:[^0-9]{{0,23}}[^0-9A-Za-z])?"
    r"(\d{3})[^0-9A-Za-z]?(\d{2})[^0-9A-Za-z]?(\d{4})(?!\w|[-.]\d)",
    _A,
)
# The whole value under a key that names an SSN: any of the forms after a context word.
_SSN_VALUE = re.compile(r"\s{0,8}(\d{3})[^0-9A-Za-z]?(\d{2})[^0-9A-Za-z]?(\d{4})\s{0,8}", _A)
# The number parts _valid_ssn accepts: no area 000, 666 or 9xx, no group 00, no serial 0000.
_SSN_AREA = r"(?:0(?:0[1-9]|[1-9][0-9])|[1-578][0-9]{2}|6(?:[0-57-9][0-9]|6[0-57-9]))"
_SSN_GROUP = r"(?:0[1-9]|[1-9][0-9])"
_SSN_SERIAL = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_SSN_LOCATOR = (
    rf"(?:^|[^A-Za-z0-9_.-]){_SSN_AREA}(?:-{_SSN_GROUP}-|[ ]{_SSN_GROUP}[ ]){_SSN_SERIAL}"
    r"(?:[^A-Za-z0-9_-]|$)"
    rf"|{_context_word_locator(_SSN_WORDS)}(?:[^0-9]{{0,23}}[^0-9A-Za-z])?"
    rf"{_SSN_AREA}[^A-Za-z0-9]?{_SSN_GROUP}[^A-Za-z0-9]?{_SSN_SERIAL}(?:[^A-Za-z0-9_]|$)"
)
# "social security", the characters before the number, the number with two separators.
_SSN_WINDOWS = _Windows(_SSN_LOCATOR, 15 + 24 + 11, 2)
# A key names an SSN if it ends in "ssn" (or a "soc sec"), alone or with a suffix ("ssn_number",
# "patientSsnNo"), or holds "social security".
_SSN_KEY = re.compile(r"(?:ssn|socsec)(?:number|num|nbr|no|nr|id)?\Z", _A)


def _valid_ssn(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _find_ssn(text: str) -> list[Span]:
    windows = _SSN_WINDOWS.of(text)
    found = [
        m.span()
        for m in _SSN_WINDOWS.finditer(_SSN_SEPARATED, text, windows)
        if _valid_ssn(m.group(1), m.group(3), m.group(4))
    ]
    found += [
        (m.start(1), m.end(3))
        for m in _SSN_WINDOWS.finditer(_SSN_CONTEXT, text, windows)
        if _valid_ssn(m.group(1), m.group(2), m.group(3))
    ]
    return found


def _is_ssn_key(key: str) -> bool:
    return _SSN_KEY.search(key) is not None or "socialsecurity" in key


def _ssn_under_key(kinds: Context, value: str) -> bool:
    if "ssn" not in kinds:
        return False
    if value.isdigit() and len(value) < 9:  # an integer that lost its leading zeros
        value = value.zfill(9)
    match = _SSN_VALUE.fullmatch(value)
    return match is not None and _valid_ssn(match.group(1), match.group(2), match.group(3))


# --- payment_card ---------------------------------------------------------------------------

# What a card number is: r"\d(?<![\w.+-]\d)(?:[ -]?\d){12,18}(?![\w-]|\.\d)", searched with
# finditer; _find_card_runs computes exactly those matches per run of digits (see there).
# A run of 13 or more digits; `re` tries only where a run starts.
_CARD_RUN = re.compile(r"[0-9](?<![0-9][0-9])(?<![0-9][ -][0-9])(?:[ -]?[0-9]){12,}", _A)
_CARD_RUN_LONG = compile_re2(r"[0-9](?:[ -]?[0-9]){12,}")
_CARD_FROM = re.compile(r"\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)", _A)  # at a possible start
_CARD_GROUP = re.compile(r"\d+", _A)
# What the pattern's lookbehind rejects before a run's first digit.
_CARD_BEFORE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-")
_CARD_LOCATOR = r"(?:^|[^A-Za-z0-9_.+])[2-6](?:[ -]?[0-9]){12}"
# The usual groupings (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4) with a separator the pattern above does
# not take, the same between all groups: a dot, slash or underscore, a run of two or three
# spaces, a Unicode space or dash.
_CARD_SEPARATOR = r"(?:[./_\u00a0\u2007\u2009\u202f\u2010-\u2015\u2212]| {2,3})"
_CARD_GROUPED = re.compile(
    rf"\d(?<![\w.+-]\d)\d{{3}}({_CARD_SEPARATOR})"
    r"(?:\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{6}\1\d{4,5})(?![\w-]|\1\d|\.\d)",
    _A,
)
_CARD_GROUPED_LOCATOR = (
    r"(?:^|[^A-Za-z0-9_.+-])[2-6][0-9]{3}(?:[./_?]| {2,3})[0-9]{4}(?:[0-9]{2})?"
    r"(?:[./_?]| {2,3})[0-9]{4}"
)
# 4-4-4-4-3 with separators of three spaces; the lookahead reads a separator and a digit.
_CARD_GROUPED_WINDOWS = _Windows(_CARD_GROUPED_LOCATOR, 19 + 4 * 3, 4)

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


def _card_digits(text: str) -> bool:
    return _card_number(text.replace(" ", "").replace("-", ""))


def _card_in(candidate: str) -> Span | None:
    """The card in one candidate (a match of the pattern): all of it, or else its longest run
    of digit groups that is one; offsets in the candidate."""
    if _card_digits(candidate):
        return (0, len(candidate))
    groups = [g.span() for g in _CARD_GROUP.finditer(candidate)]
    if len(groups) > 1:
        for start, end in _card_windows(groups):
            if _card_digits(candidate[start:end]):
                return (start, end)
    return None


def _check_card(text: str, start: int, end: int, checked: dict[str, Span | None]) -> list[Span]:
    """:func:`_card_in` for one candidate, once per distinct candidate in ``checked``."""
    candidate = text[start:end]
    if candidate in checked:
        card = checked[candidate]
    else:
        card = checked[candidate] = _card_in(candidate)
    return [] if card is None else [(start + card[0], start + card[1])]


def _find_card(text: str) -> list[Span]:
    return _find_card_runs(text) + _find_card_grouped(text)


def _find_card_runs(text: str) -> list[Span]:
    """The card numbers in ``text``: what ``finditer`` of the pattern above finds, run by run.

    A match lies inside one run of digits joined by single spaces or hyphens. Its first digit
    follows a space inside the run, or is the run's first digit if the character before the run
    allows it (the pattern's lookbehind rejects every other digit). So the pattern is tried only
    there, from one group's start to the next (or past the match it found, which ends before a
    space or at the run's end): one attempt per space-separated group, not per digit."""
    found: list[Span] = []
    checked: dict[str, Span | None] = {}  # only while scanning this text: candidates are data
    size = len(text)
    runs = _CARD_RUN.finditer(text) if size <= LONG else _CARD_RUN_LONG.finditer(ascii_view(text))
    for run_match in runs:
        start, end = run_match.span()
        run = text[start:end]
        if run.count(run[0]) + run.count(" ") + run.count("-") == len(run):
            continue  # one digit repeated: so is every candidate in it
        at = (
            start
            if start == 0 or text[start - 1] not in _CARD_BEFORE
            else _next_group(text, start, end)
        )
        while at < end:
            match = _CARD_FROM.match(text, at)
            if match is None:
                at = _next_group(text, at, end)
            else:
                found += _check_card(text, at, match.end(), checked)
                at = match.end() + 1
    return found


def _find_card_grouped(text: str) -> list[Span]:
    """The card numbers in the usual groupings with other separators, each distinct candidate
    checked once (a text without such a separator costs a few substring searches)."""
    if text.isascii() and not any(separator in text for separator in (".", "/", "_", "  ")):
        return []
    found: list[Span] = []
    checked: dict[str, bool] = {}  # only while scanning this text: candidates are data
    windows = _CARD_GROUPED_WINDOWS.of(text)
    for match in _CARD_GROUPED_WINDOWS.finditer(_CARD_GROUPED, text, windows):
        candidate = match.group()
        if candidate not in checked:
            checked[candidate] = _card_number(candidate.replace(match.group(1), ""))
        if checked[candidate]:
            found.append(match.span())
    return found


def _next_group(text: str, at: int, end: int) -> int:
    """Where the run's next space-separated group starts; ``end`` if none does."""
    space = text.find(" ", at, end)
    return end if space < 0 else space + 1


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
_IBAN_DIGITS = str.maketrans({chr(code): str(code - 55) for code in range(65, 91)})  # A -> 10


def _iban_locator() -> str:
    """A country code, its IBANs' exact length and the boundaries on both sides."""
    countries: dict[int, list[str]] = {}
    for country, length in sorted(_IBAN_LENGTHS.items()):
        countries.setdefault(length, []).append(country)
    bodies = "|".join(
        f"(?:{'|'.join(codes)})[0-9]{{2}}(?: ?[A-Z0-9]){{{length - 4}}}"
        for length, codes in sorted(countries.items())
    )
    return rf"(?:^|[^A-Za-z0-9])(?:{bodies})(?:[^A-Za-z0-9]|$)"


_IBAN_LOCATOR = _iban_locator()
# An IBAN match (and what `covered` skips) holds only these characters.
_IBAN_CHAINS = chain_pattern("[A-Z0-9 ]", _IBAN_LOCATOR)


def iban_valid(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97 checksum of an IBAN without spaces."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    return int((iban[4:] + iban[:4]).translate(_IBAN_DIGITS)) % 97 == 1


# IBANs in their printed form (groups of four, the last one maybe shorter) with a lowercase
# letter in the country code, or with hyphens between the groups (the uppercase form with spaces
# is the search above's). A match is a candidate's first check digit (digits are rare in text,
# and `re` skips to them in C), its country code read behind it and the rest of it ahead: as a
# start's groups can hide a later start, every start is tried.
_IBAN_GROUPED = re.compile(
    r"[0-9](?<=(?<![A-Za-z0-9])([A-Za-z]{2}[0-9]))(?=([0-9]([ -])[A-Za-z0-9]{4}"
    r"(?:\3[A-Za-z0-9]{4}){1,6}(?:\3[A-Za-z0-9]{1,3})?)(?![A-Za-z0-9]))",
    _A,
)
_IBAN_GROUPED_LOCATOR = (
    r"(?:^|[^A-Za-z0-9])(?:[A-Za-z]{2}[0-9]{2}-[A-Za-z0-9]{4}-[A-Za-z0-9]{4}"
    r"|(?:[a-z][A-Za-z]|[A-Z][a-z])[0-9]{2} [A-Za-z0-9]{4} [A-Za-z0-9]{4})"
)
# Eight groups and their separators (34 characters at most, 7 separators) and the boundary.
_IBAN_GROUPED_WINDOWS = _Windows(_IBAN_GROUPED_LOCATOR, 34 + 7, 1)


# Each possible start (its first letter, then what follows it as far as the start's outcome can
# depend on: the longest body and the character after it), so that candidates that read alike
# are checked once.
_IBAN_CANDIDATE = re.compile(r"([A-Z])(?<![A-Za-z0-9][A-Z])(?=([A-Z]\d\d(?s:.){0,65}))", _A)
_GROUPS = methodcaller("groups")


def _iban_at(first: str, rest: str) -> int:
    """The length of the IBAN a candidate starts with, 0 if none."""
    candidate = first + rest
    length = _IBAN_LENGTHS.get(candidate[:2])
    if length is None or _IBAN_START.match(candidate) is None:
        return 0
    body = _IBAN_BODIES[length].match(candidate)
    if body is None or not iban_valid(body.group().replace(" ", "")):
        return 0
    return body.end()


def _find_ibans(text: str) -> list[Span]:
    return _find_iban(text) + _find_iban_grouped(text)


def _find_iban(text: str) -> list[Span]:
    """Every start checked in order, a found IBAN's inside skipped. The candidates of a window
    are first collected in C (``findall``) and checked once per distinct text; only a window
    that holds an IBAN is gone through start by start, and then only at the starts whose text
    is one."""
    found: list[Span] = []
    covered = 0
    chains = _chains(_IBAN_CHAINS, text)
    for start, end in [(0, len(text))] if chains is None else chains:
        stop = min(len(text), end + 1)
        lengths = {key: _iban_at(*key) for key in set(_IBAN_CANDIDATE.findall(text, start, stop))}
        if not any(lengths.values()):
            continue
        matches = list(_IBAN_CANDIDATE.finditer(text, start, stop))
        for match in compress(matches, map(lengths.__getitem__, map(_GROUPS, matches))):
            at = match.start()
            if at >= end:
                break
            if at >= covered:
                covered = at + lengths[match.groups()]
                found.append((at, covered))
    return found


def _find_iban_grouped(text: str) -> list[Span]:
    """The IBANs in printed groups that the uppercase search leaves. As there, a window's
    candidates are collected in C and checked once per distinct text, and only a window that
    holds an IBAN is gone through start by start."""
    found: list[Span] = []
    windows = _IBAN_GROUPED_WINDOWS.of(text)
    for start, end, stop in _IBAN_GROUPED_WINDOWS.searches(text, windows):
        candidates = set(_IBAN_GROUPED.findall(text, start, stop))
        lengths = {candidate: _grouped_iban_length(*candidate) for candidate in candidates}
        if not any(lengths.values()):
            continue
        for match in _IBAN_GROUPED.finditer(text, start, stop):
            if match.start() >= end:
                break
            if length := lengths[match.groups()]:
                found.append((match.start() - 2, match.start() - 2 + length))
    return found


def _grouped_iban_length(head: str, rest: str, separator: str) -> int:
    """The length of the IBAN that a candidate (its country code and first check digit, and the
    rest) starts with, 0 if none: as many characters as the country's IBANs have, ending with a
    group."""
    if separator == " " and head[:2].isupper():
        return 0
    compact = (head + rest).replace(separator, "").upper()
    length = _IBAN_LENGTHS.get(compact[:2], len(compact) + 1)
    if length > len(compact) or (length < len(compact) and length % 4):
        return 0
    if not iban_valid(compact[:length]):
        return 0
    return length + (length - 1) // 4 * len(separator)


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
_CLOUD_LOCATOR = (
    r"(?:^|[^A-Za-z0-9])A[KS]IA[A-Z0-9]{16}(?:[^A-Za-z0-9]|$)"
    r"|(?:^|[^A-Za-z0-9_-])AIza[A-Za-z0-9_-]{35}(?:[^A-Za-z0-9_-]|$)"
    r"|(?:^|[^A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}"
    r"|(?:^|[^A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22}"
    r"|(?:^|[^A-Za-z0-9-])xox[baprs]-[A-Za-z0-9-]{10}"
    r"|(?:^|[^A-Za-z0-9_])[rs]k_live_[A-Za-z0-9]{16}"
    r"|(?:^|[^A-Za-z0-9_-])sk-[A-Za-z0-9_-]{32}"
)
_CLOUD_WINDOWS = _Windows(_CLOUD_LOCATOR, len("github_pat_") + 255, 1)


def _mixed_token(token: str) -> bool:
    """Has upper- and lowercase letters and digits: random, unlike a slug-of-words."""
    return (
        any(c.isdigit() for c in token)
        and any(c.isupper() for c in token)
        and any(c.islower() for c in token)
    )


def _find_cloud_key(text: str) -> list[Span]:
    windows = _CLOUD_WINDOWS.of(text)
    found = [
        match.span()
        for literal, pattern in _CLOUD_KEYS
        if literal in text
        for match in _CLOUD_WINDOWS.finditer(pattern, text, windows)
    ]
    if "sk-" in text:
        found += [
            m.span()
            for m in _CLOUD_WINDOWS.finditer(_OPENAI_KEY, text, windows)
            if _mixed_token(m.group(1))
        ]
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
_DIGIT = re.compile(r"[0-9]", _A)
_LETTER = re.compile(r"[A-Za-z]", _A)
_SPACE_OR_NUL = re.compile(r"[\s\x00]")  # str.isspace() is what \s means for str patterns
# `identifier = value` / `"identifier": "value"` in free text; the identifier decides.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.-])([A-Za-z][\w.-]{0,63})["']?[ \t]{0,3}[:=][ \t]{0,3}["']?"""
    r"""([\w\-+/.~]{6,512}={0,2})""",
    _A,
)
_BEARER = re.compile(r"(?<![\w-])bearer[ \t]{1,3}([\w\-+/.~]{16,4096}={0,2})", _I)
# What can be found: a secret word in the identifier and a value long enough for a token (16
# characters with the trailing '='s), or an identifier that can end in a password name (its
# last letter or digit a 'd' or an 'e') and a value that is not only letters; or a bearer token.
_SECRET_WORDS = r"(?i:key|secret|token|passw|passphrase|pwd|credential)"
_ASSIGN = r"""["']?[ \t]{0,3}[:=][ \t]{0,3}["']?"""
_VALUE, _NOT_LETTER = r"[A-Za-z0-9_+/.~-]", r"[0-9_+/.~-]"
_SECRET_LOCATOR = (
    # A token: 16 characters, counting up to two trailing '='.
    rf"{_SECRET_WORDS}[A-Za-z0-9_.-]*{_ASSIGN}(?:{_VALUE}{{16}}|{_VALUE}{{15}}=|{_VALUE}{{14}}==)"
    # A password: at least 6 characters before any '=', not all of them letters.
    rf"|(?:(?i:pwd|passphrase)|{_SECRET_WORDS}[A-Za-z0-9_.-]*[dDeE])[_.-]*{_ASSIGN}(?:"
    + "|".join(f"[A-Za-z]{{{k}}}{_NOT_LETTER}{_VALUE}{{{5 - k}}}" for k in range(6))
    + r"|[A-Za-z]{6,}[0-9_+/.~=-])"
    r"|(?i:bearer)[ \t]{1,3}[A-Za-z0-9_+/.~-]{16}"
)
# Every character an assignment or bearer match can hold: one cannot cross anything else.
_SECRET_CHAINS = chain_pattern(r"""[A-Za-z0-9_."' \t:=+/~-]""", _SECRET_LOCATOR)


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
        _TOKEN_CHARS.fullmatch(value) is not None  # so ASCII: a digit is [0-9], a letter [A-Za-z]
        and _DIGIT.search(value) is not None
        and _LETTER.search(value) is not None
        and _shannon_entropy(value) >= 3.0
    )


def _secret_value(kind: str, value: str) -> bool:
    if kind == "password":
        # NUL stands where the scanner blanked a redaction marker: it separates like a space,
        # so a redacted value does not turn into a password-looking one.
        return (
            len(value) >= 6
            and _SPACE_OR_NUL.search(value) is None
            and value.count(value[0]) != len(value)  # more than one distinct character
        )
    return _token_like(value)


def _find_generic_key(text: str) -> list[Span]:
    found: list[Span] = []
    checked: dict[tuple[str, str], bool] = {}  # only while scanning this text: values are data
    chains = _chains(_SECRET_CHAINS, text)
    for match in _in_chains(_ASSIGNMENT, text, chains):
        name, value = match.group(1), match.group(2)
        kind = _secret_kind(normalize_key(name)) if _SECRET_WORD.search(name) else None
        # In prose ("password: expired") a password must hold something besides letters.
        if kind is None or (kind == "password" and value.isalpha()):
            continue
        if _once(checked, (kind, value)):
            found.append(match.span(2))
    found += [
        m.span(1)
        for m in _in_chains(_BEARER, text, chains)
        if _once(checked, ("token", m.group(1)))
    ]
    return found


def _once(checked: dict[tuple[str, str], bool], kind_value: tuple[str, str]) -> bool:
    """:func:`_secret_value`, once per distinct value in ``checked``."""
    if kind_value not in checked:
        checked[kind_value] = _secret_value(*kind_value)
    return checked[kind_value]


def _generic_under_key(kinds: Context, value: str) -> bool:
    kind = "password" if "password" in kinds else "token" if "token" in kinds else None
    return kind is not None and _secret_value(kind, value.strip())


# --- private_key ----------------------------------------------------------------------------

# Both start with a literal, which `re` finds without trying every position.
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
# A header that decodes to a JSON object with an "alg" holds at least {"alg":""}, 10 bytes,
# which take 14 base64 characters.
_JWT_HEADER = r"eyJ[A-Za-z0-9_-]{11,}\.[A-Za-z0-9_-]{2}"
_JWT_CHAINS = chain_pattern("[A-Za-z0-9_.-]", _JWT_HEADER)


def _jwt_header(segment: str) -> bool:
    """Whether a base64url segment decodes to a JSON object with an ``alg``."""
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:  # not base64, not UTF-8 or not JSON
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def _find_jwt(text: str) -> list[Span]:
    if "eyJ" not in text:
        return []
    found: list[Span] = []
    checked: dict[str, bool] = {}  # headers decoded while scanning this text
    for match in _in_chains(_JWT, text, _chains(_JWT_CHAINS, text)):
        header = match.group(1)
        if header not in checked:
            checked[header] = _jwt_header(header)
        if checked[header]:
            found.append(match.span())
    return found


# --- medical_record_number ------------------------------------------------------------------

_MRN_WORDS = r"(?:mrn|med(?:ical)?[ _-]?rec(?:ord)?)(?:[ _-]?(?:number|num|nbr|no|nr|\#))?"
_MRN_CONTEXT = re.compile(
    rf"(?<![a-z0-9]){_MRN_WORDS}"
    r"[^a-z0-9]{0,4}(?:is[^a-z0-9]{1,3})?([a-z]{0,3}-?\d{5,12})(?![a-z0-9])",
    _I,
)
_MRN_VALUE = re.compile(r"\s{0,8}[A-Za-z]{0,3}-?\d{5,12}\s{0,8}", _A)
_MRN_LOCATOR = (
    rf"(?:^|[^A-Za-z0-9])(?i:{_MRN_WORDS})"
    r"[^A-Za-z0-9]{0,4}(?:(?i:is)[^A-Za-z0-9]{1,3})?[A-Za-z]{0,3}-?[0-9]{5,12}"
    r"(?:[^A-Za-z0-9]|$)"
)
# "medical record number is " and the longest number.
_MRN_WINDOWS = _Windows(_MRN_LOCATOR, 21 + 4 + 5 + 16, 1)
_MRN_KEY = re.compile(r"mrn(?:number|num|nbr|no|nr|id)?\Z", _A)


def _find_mrn(text: str) -> list[Span]:
    return [m.span(1) for m in _MRN_WINDOWS.finditer(_MRN_CONTEXT, text, _MRN_WINDOWS.of(text))]


def _is_mrn_key(key: str) -> bool:
    return _MRN_KEY.search(key) is not None or "medicalrecord" in key or key.startswith("medrec")


def _mrn_under_key(kinds: Context, value: str) -> bool:
    return "mrn" in kinds and _MRN_VALUE.fullmatch(value) is not None


# --- the table ------------------------------------------------------------------------------

# Gates are written to match both a raw string and its JSON encoding (where '"' is '\\"' and a
# tab is '\\t'), so the scanner can also run them over a whole serialized payload.
_SECRET_GATE = (
    r"(?i:(?:key|secret|token|passw|passphrase|pwd|credential)[A-Za-z0-9_.-]{0,63}"
    r"(?:\\?[\"'])?(?: |\t|\\t){0,3}[:=]|bearer(?: |\t|\\t))"
)
BUILTINS: tuple[Builtin, ...] = (
    Builtin(
        "email",
        r"[A-Za-z0-9._%+\x{80}-\x{10FFFF}-]@[A-Za-z0-9\x{80}-\x{10FFFF}-]+"
        r"[.\x{3002}\x{FF0E}\x{FF61}][A-Za-z0-9\x{80}-\x{10FFFF}-]",
        _EMAIL_LOCATOR,
        _find_email,
    ),
    Builtin(
        "phone",
        r"\+[1-9](?:[ .-]?\(?[0-9]\)?){7}|\([0-9]{2,5}\)[ .-]?[0-9]{3}"
        r"|[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4}"
        r"|0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3}|0[1-9](?:[ .][0-9]{2}){4}"
        r"|(?i:phone|tel|mobile|fax|cell)",
        _PHONE_LOCATOR,
        _find_phone,
        under_key=_phone_under_key,
    ),
    Builtin(
        "us_ssn",
        rf"[0-9]{{3}}[- ][0-9]{{2}}[- ][0-9]{{4}}|(?i:{'|'.join(_SSN_WORDS)})",
        _SSN_LOCATOR,
        _find_ssn,
        under_key=_ssn_under_key,
    ),
    Builtin(
        "payment_card",
        r"[2-6](?:[ -]?[0-9]){12}|[2-6][0-9]{3}"
        r"(?:[./_\x{a0}\x{2007}\x{2009}\x{202f}\x{2010}-\x{2015}\x{2212}]| {2,3})[0-9]{4}",
        f"{_CARD_LOCATOR}|{_CARD_GROUPED_LOCATOR}",
        _find_card,
        numeric=True,
    ),
    Builtin(
        "iban",
        r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11}"
        r"|[A-Za-z]{2}[0-9]{2}[ -][A-Za-z0-9]{4}[ -][A-Za-z0-9]{4}",
        f"{_IBAN_LOCATOR}|{_IBAN_GROUPED_LOCATOR}",
        _find_ibans,
    ),
    Builtin(
        "cloud_api_key",
        r"AKIA|ASIA|AIza|gh[pousr]_|github_pat_|xox[baprs]-|k_live_|sk-",
        _CLOUD_LOCATOR,
        _find_cloud_key,
    ),
    Builtin(
        "generic_api_key",
        _SECRET_GATE,
        _SECRET_LOCATOR,
        _find_generic_key,
        under_key=_generic_under_key,
    ),
    Builtin("private_key", r"PRIVATE KEY", _PEM_BEGIN.pattern, _find_private_key),
    Builtin("jwt", r"eyJ", rf"(?:^|[^A-Za-z0-9_-]){_JWT_HEADER}", _find_jwt),
    Builtin(
        "medical_record_number",
        r"(?i:mrn|med(?:ical)?[ _-]?rec)",
        _MRN_LOCATOR,
        _find_mrn,
        under_key=_mrn_under_key,
    ),
)

# A key tells what its values may be only if it ends in one of a kind's words: followed by
# identifier characters for a secret (then the generic gate also hits the key in a serialized
# payload: '"api_key":'), by spaces and '#' too for an SSN or a record number, whose gates hit
# their words anywhere ("SSN #", "Social Security Number"). Only then are the key's last
# characters normalized and checked for that kind, so the text of a redaction marker in a key
# (its brackets end a word's run) tells nothing.
_KEY_WORDS = (
    (
        "secret",
        re.compile(
            r"(?:key|secret|token|passw|passphrase|pwd|credential)[A-Za-z0-9_.-]{0,63}\Z", _I
        ),
    ),
    ("ssn", re.compile(rf"(?:{'|'.join(_SSN_WORDS)})[A-Za-z0-9 _.#-]{{0,63}}\Z", _I)),
    ("mrn", re.compile(r"(?:mrn|med(?:ical)?[ _-]?rec)[A-Za-z0-9 _.#-]{0,63}\Z", _I)),
)
# A key's words are looked for at most this far from its end.
_CONTEXT_REACH = len("social_security") + 63
_CACHED_KEY_LENGTH = 64


def key_context(key: str) -> Context:
    """What ``key`` tells of the values under it (see :data:`Context`)."""
    return _cached_key_context(key) if len(key) <= _CACHED_KEY_LENGTH else _key_context(key)


@lru_cache(maxsize=4096)
def _cached_key_context(key: str) -> Context:
    return _key_context(key)


def _key_context(key: str) -> Context:
    start = max(0, len(key) - _CONTEXT_REACH)
    kinds = {"phone"} if _PHONE_KEY.search(key, start) is not None else set()
    words = {kind for kind, pattern in _KEY_WORDS if pattern.search(key, start) is not None}
    if words:
        normalized = normalize_key(key[start:])
        secret = _secret_kind(normalized) if "secret" in words else None
        if secret is not None:
            kinds.add(secret)
        if "ssn" in words and _is_ssn_key(normalized):
            kinds.add("ssn")
        if "mrn" in words and _is_mrn_key(normalized):
            kinds.add("mrn")
    return frozenset(kinds)
