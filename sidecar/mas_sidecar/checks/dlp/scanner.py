"""The DLP scanner: finds sensitive data in a JSON payload and blocks, redacts or logs it.

:class:`DlpScanner` compiles a :class:`~mas_core.policy.dlp.DlpPolicy` once; :meth:`DlpScanner.scan`
then walks a payload iteratively (any depth, no recursion) and checks every string value, every
object key and, for the detectors where a number can be the data (a card number sent as an
integer, an SSN under an ``ssn`` key), integers as their decimal text, and floats below 10**16
as the digits of their integer part (which their JSON shows: ``123456789.0``,
``4111111111111111.5``; larger ones are written with an exponent).

Cost: without custom detectors, the payload is serialized (orjson) and one RE2 alternation of
the enabled detectors' gates runs over it, a single linear DFA pass; a clean payload ends there.
Otherwise the scanner walks, in document order, down only into the children a gate match starts
in (and into values under a telling key): a child's place in the serialization follows from the
lengths of its elder siblings' own serializations, taken only in containers a match lies in, and
the search for the next match resumes where the walk has got to, so the gate passes over the
serialization about once more in all, one search per hot region. Each string the walk reaches
goes only through the detectors whose locator (a tighter pattern than the gate, see
``mas_sidecar.checks.dlp.detectors``) hits that string: one ``re2.Set`` pass over it, whatever its
length, so a long string that only looks like data (IBAN-like prefixes, ``api_key=`` without a
value) costs about what clean text does. The detectors it lets through are linear with a small
constant; the detectors module says how. Custom patterns are RE2 and run on every string, so
with custom detectors everything is walked (a custom ``^`` or ``$`` means the string's own start
or end, which a pass over joined text cannot honour); the built-ins' gate then runs once over
all strings joined with NUL separators.

A finding names its detector and its place (``payload.items[2].email``), never the matched text;
a key that holds a finding appears in paths in its redacted form. Redaction replaces each
matched span with ``[REDACTED:<detector>]`` in a copy of the payload (the input is never
modified); a redacted key that collides with another key of its object gets a ``#2``, ``#3``
suffix. Redaction markers already in a string are blanked before detectors see it (and before a
key is read for what it tells of its values), so scanning a redacted payload again finds
nothing new.

Used through :meth:`DlpScanner.scan_parts` by the sidecar's send path, over the parts of a
message its receiver reads (422 when ``PartsResult.refusal`` says why, else the redacted parts
go out), and by the registry, over the metadata an agent publishes in discovery.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
import re2

from mas_core.policy.dlp import DlpAction, DlpPolicy, compile_pattern, re2_options
from mas_sidecar.checks.dlp import redaction
from mas_sidecar.checks.dlp.detectors import (
    BUILTINS,
    NO_CONTEXT,
    Context,
    Span,
    ascii_view,
    key_context,
)

ROOT = "payload"
_REDACT = DlpAction.REDACT
_MARKER = re.compile(r"\[REDACTED:[a-z0-9_-]{1,63}\]")
_MARKER_START = "[REDACTED:"
_SEPARATOR = "\x00"
_SEPARATOR_BYTES = b"\x00"
_MIN_NUMBER = 10**12  # below 13 digits an integer is checked only under a telling key
_MAX_NUMBER = 10**19  # beyond any card number; larger integers are not scanned
_WRITTEN_OUT = 1e16  # JSON writes a float's integer digits out below this, else an exponent
_GATE_MEMORY = 32 << 20

# A place in the payload: (the node of its container, the container, key or index there).
_Node = tuple[Any, Any, Any] | None
_Hit = tuple[int, int, "_Detector"]
# Where a scanned string or number sits: its node, its container and slot, whether it is a key.
_Place = tuple[_Node, Any, Any, bool]
# A container the hot walk is in: its (key or index, value) pairs still to see, itself, its node,
# the key context its items share (an array's, never an object's), whether it is an object, where
# its next child starts in the serialized payload, where it ends there, and how many children are
# left (the last one ends just before the closing bracket).
_Frame = tuple[Iterator[tuple[Any, Any]], Any, _Node, Context, bool, int, int, int]


@dataclass(frozen=True)
class Finding:
    """One detector's match at one place; never the matched text."""

    detector: str
    action: DlpAction
    path: str

    def record(self) -> dict[str, str]:
        """The finding as audit entries and logs show it."""
        return {"detector": self.detector, "action": self.action.value, "path": self.path}


@dataclass(frozen=True)
class ScanResult:
    """The outcome of scanning one payload."""

    payload: Any = field(repr=False)  # a redacted copy if anything was redacted, else the input
    findings: tuple[Finding, ...]
    blocked: bool  # some finding's action is ``block``
    detectors: tuple[str, ...]  # sorted names of the detectors that block
    redacted: bool  # ``payload`` is a redacted copy


@dataclass(frozen=True)
class PartsResult:
    """The outcome of scanning the parts of one thing an agent sends (see
    :meth:`DlpScanner.scan_parts`)."""

    redacted: dict[str, Any] = field(repr=False)  # the parts that were redacted: their copies
    findings: tuple[Finding, ...]
    refusal: str | None  # why the whole is refused (naming parts and detectors), or None
    detectors: tuple[str, ...]  # sorted names of the detectors that refuse it


@dataclass(frozen=True)
class _Detector:
    name: str
    action: DlpAction
    find: Callable[[str], list[Span]]
    keys: bool = True
    under_key: Callable[[Context, str], bool] | None = None
    numeric: bool = False


@dataclass
class _Walk:
    """What a walk collected: strings with their places, and the numbers worth a look."""

    texts: list[str] = field(default_factory=list)
    places: list[_Place] = field(default_factory=list)
    contexts: dict[int, Context] = field(default_factory=dict)  # text index -> key context
    numbers: list[tuple[_Place, str, Context]] = field(default_factory=list)  # place, digits, ctx
    candidates: set[int] = field(default_factory=set)  # texts the built-ins must see

    def add(self, text: str, place: _Place, context: Context) -> None:
        if context:
            self.contexts[len(self.texts)] = context
        self.texts.append(text)
        self.places.append(place)


class DlpScanner:
    """Scans payloads against one policy; build once, call :meth:`scan` per message."""

    def __init__(self, policy: DlpPolicy) -> None:
        self._enabled = policy.enabled
        self._builtins = [
            _Detector(b.name, policy.detectors[b.name], b.find, True, b.under_key, b.numeric)
            for b in BUILTINS
            if b.name in policy.detectors
        ]
        self._keyed = [d for d in self._builtins if d.under_key is not None]
        self._numeric = [d for d in self._builtins if d.numeric]
        self._custom = [
            _Detector(c.name, c.action, _finder(compile_pattern(c.pattern)), c.keys)
            for c in policy.custom
        ]
        self._gate: Any = None
        self._dispatch: Any = None  # which detectors' locators hit one string, in one pass
        if self._builtins:
            self._gate, self._dispatch = _compiled(tuple(d.name for d in self._builtins))

    def scan(self, payload: Any, root: str = ROOT) -> ScanResult:
        """Scan ``payload`` (any JSON value); never raises for one. Findings' paths start with
        ``root`` (``payload.items[2]``, ``metadata.email``)."""
        if not self._enabled or not (self._builtins or self._custom):
            return ScanResult(payload, (), False, (), False)
        walk = self._collect(payload)
        found: list[tuple[_Place, list[_Hit]]] = []
        for index, text in enumerate(walk.texts):
            place = walk.places[index]
            context = walk.contexts.get(index, NO_CONTEXT)
            hits = self._scan_text(text, place[3], context, builtins=index in walk.candidates)
            if hits:
                found.append((place, hits))
        for place, digits, context in walk.numbers:
            detectors = self._scan_number(digits, context)
            if detectors:
                found.append((place, [(0, len(digits), d) for d in detectors]))
        if not found:
            return ScanResult(payload, (), False, (), False)
        return _result(payload, found, root)

    def scan_parts(self, parts: Mapping[str, Any], fixed: Collection[str] = ()) -> PartsResult:
        """Scan each of ``parts`` (name -> JSON value), its name the root of its findings'
        paths. A part named in ``fixed`` is never rewritten (an identifier): there, a redacting
        detector's finding refuses the whole, as a blocking one's does anywhere."""
        redacted: dict[str, Any] = {}
        findings: list[Finding] = []
        refusing: dict[str, set[str]] = {}  # part -> the detectors that refuse it
        unrewritable: list[str] = []  # fixed parts refused for what a detector would redact
        for name, value in parts.items():
            result = self.scan(value, name)
            findings += result.findings
            detectors = set(result.detectors)
            if result.redacted and name in fixed:
                unrewritable.append(name)
                detectors.update(f.detector for f in result.findings if f.action is _REDACT)
            if detectors:
                refusing[name] = detectors
            elif result.redacted:
                redacted[name] = result.payload
        if not refusing:
            return PartsResult(redacted, tuple(findings), None, ())
        names = sorted(set().union(*refusing.values()))
        verb = "holds" if len(refusing) == 1 else "hold"
        action = "blocks or redacts" if unrewritable else "blocks"
        reason = f"the {' and '.join(refusing)} {verb} data the policy {action}: {', '.join(names)}"
        if unrewritable:
            reason += f" ({' and '.join(unrewritable)} cannot be redacted)"
        return PartsResult({}, tuple(findings), reason, tuple(names))

    def _collect(self, payload: Any) -> _Walk:
        """The strings and numbers to check, with the indexes of those built-ins must see.

        Without custom detectors, the gate runs over the serialized payload first: a clean
        payload ends there, otherwise only the subtrees the gate hits are walked. Custom
        detectors see every string, so then everything is walked.
        """
        numbers = bool(self._numeric or self._keyed)
        if self._custom or self._gate is None:
            walk = _walk(payload, numbers=numbers)
            walk.candidates = self._candidates(walk)
            return walk
        try:
            serialized = orjson.dumps(payload)
        except (orjson.JSONEncodeError, TypeError):  # not plain JSON: walk it all
            walk = _walk(payload, numbers=numbers)
            walk.candidates = self._candidates(walk)
            return walk
        walk = _Walk()
        first = self._gate.search(serialized)
        if first is not None:
            self._walk_hot(payload, serialized, first.start(), walk)
        walk.candidates = set(range(len(walk.texts)))
        return walk

    def _candidates(self, walk: _Walk) -> set[int]:
        """Indexes of the walked strings a built-in detector may find something in."""
        candidates = set(walk.contexts) if self._keyed else set()
        if self._gate is None or not walk.texts:
            return candidates
        blob = _SEPARATOR.join(walk.texts).encode("utf-8", "surrogatepass")
        if blob.count(_SEPARATOR_BYTES) != len(walk.texts) - 1:  # a string holds NUL
            return set(range(len(walk.texts)))
        return candidates | self._hot(blob)

    def _hot(self, blob: bytes) -> set[int]:
        """Indexes of the NUL-separated parts of ``blob`` that a gate hits."""
        hot: set[int] = set()
        index, counted_to, position = 0, 0, 0
        while (match := self._gate.search(blob, position)) is not None:
            start = match.start()
            index += blob.count(_SEPARATOR_BYTES, counted_to, start)
            hot.add(index)
            following = blob.find(_SEPARATOR_BYTES, start)
            if following < 0:
                break
            index, counted_to, position = index + 1, following + 1, following + 1
        return hot

    def _walk_hot(self, payload: Any, serialized: bytes, first: int, walk: _Walk) -> None:
        """Walk, in document order, only into what a gate match starts in, and into values under
        a telling key; collect the strings and numbers found there.

        A child's place in ``serialized`` follows from the lengths of its elder siblings' own
        serializations, so the gate searches again only when the walk passes the last match it
        found (``first`` is the first one): once per hot region, never per container. A
        container is left as soon as no match is left in it, unless it is an array under a
        telling key (all of whose items are looked at).
        """
        search = self._gate.search
        size = len(serialized)

        def next_hit(start: int) -> int:
            match = search(serialized, start)
            return size if match is None else match.start()

        if not isinstance(payload, dict | list | tuple):
            _leaf(payload, (None, None, None, False), NO_CONTEXT, walk)
            return
        hit = first  # where the first match at or after the last place searched from starts
        frames = [_frame(payload, None, NO_CONTEXT, 0, size)]
        dumps = orjson.dumps
        while frames:
            children, container, node, shared, keyed, position, end, left = frames[-1]
            entered: _Frame | None = None
            for slot, value in children:
                left -= 1
                if hit < position:
                    hit = next_hit(position)
                if hit >= end and not shared:
                    break
                context = shared
                start = position
                if keyed:  # the key comes first, with its colon
                    start += len(dumps(slot)) + 1
                    context = NO_CONTEXT
                    if hit < start:
                        walk.add(slot, ((node, container, slot), container, slot, True), context)
                        context = key_context(_unmarked(slot))
                        hit = next_hit(start)  # the value may hold a match of its own
                position = start + len(dumps(value)) + 1 if left else end
                if hit < start:
                    hit = next_hit(start)
                hot = hit < position - 1
                if not (hot or context):
                    continue
                entry = (node, container, slot)
                if not isinstance(value, dict | list | tuple):
                    _leaf(value, (entry, container, slot, False), context, walk)
                elif hot or not isinstance(value, dict):
                    entered = _frame(value, entry, context, start, position - 1)
                    break
            if entered is None:
                frames.pop()
            else:
                frames[-1] = (children, container, node, shared, keyed, position, end, left)
                frames.append(entered)

    def _scan_text(
        self, text: str, is_key: bool, context: Context, *, builtins: bool
    ) -> list[_Hit]:
        if not builtins and not self._custom:
            return []
        text = _unmarked(text)
        detectors = self._custom
        if builtins:
            detectors = self._gated(text) + detectors
        hits = [
            (start, end, detector)
            for detector in detectors
            if detector.keys or not is_key
            for start, end in detector.find(text)
            if end > start
        ]
        if context and builtins:
            hits += [
                (0, len(text), d)
                for d in self._keyed
                if d.under_key is not None and d.under_key(context, text)
            ]
        return hits

    def _gated(self, text: str) -> list[_Detector]:
        """The built-ins whose locator hits ``text``, from one multi-pattern DFA pass, whatever
        the string's length: an ``RE2::Set`` never gives up on a long text (its DFA, unlike a
        single pattern's, has no slower engine to fall back on, so it flushes its state cache
        and goes on), and a budget too small for one state fails ``Compile()`` already."""
        indexes = self._dispatch.Match(ascii_view(text)) or ()
        return [self._builtins[index] for index in sorted(indexes)]

    def _scan_number(self, digits: str, context: Context) -> list[_Detector]:
        detectors = [d for d in self._numeric if d.find(digits)]
        if context:
            detectors += [
                d
                for d in self._keyed
                if d not in detectors and d.under_key is not None and d.under_key(context, digits)
            ]
        return detectors


@lru_cache(maxsize=64)
def _compiled(names: tuple[str, ...]) -> tuple[Any, Any]:
    """The gate alternation and the locator set of the named built-ins (both immutable once
    compiled, so scanners of the same detectors share them)."""
    enabled = [b for b in BUILTINS if b.name in names]
    options = re2_options()
    options.max_mem = _GATE_MEMORY
    gate = re2.compile("|".join(f"(?:{b.gate})" for b in enabled), options)
    dispatch = re2.Set.SearchSet(options)
    for builtin in enabled:
        dispatch.Add(builtin.locator)
    dispatch.Compile()
    return gate, dispatch


def _unmarked(text: str) -> str:
    """``text`` with the redaction markers in it blanked (NUL), so that what a scan redacted
    tells nothing in a later scan: neither as data nor as the words of a key."""
    if _MARKER_START in text:
        return _MARKER.sub(lambda marker: _SEPARATOR * len(marker.group()), text)
    return text


def _frame(container: Any, node: _Node, context: Context, start: int, end: int) -> _Frame:
    """The hot walk's frame for a container serialized as ``serialized[start:end]``."""
    if isinstance(container, dict):
        items = iter(container.items())
        return (items, container, node, NO_CONTEXT, True, start + 1, end, len(container))
    return (enumerate(container), container, node, context, False, start + 1, end, len(container))


def _leaf(value: Any, place: _Place, context: Context, walk: _Walk) -> None:
    """Collect a string or a number worth a look that the hot walk reached."""
    if isinstance(value, str):
        walk.add(value, place, context)
    elif (digits := _digits(value, context)) is not None:
        walk.numbers.append((place, digits, context))


def _digits(value: Any, context: Context) -> str | None:
    """The decimal digits of a number that can hold data (an integer, or a float's integer
    part where its JSON shows it; under a telling key, or long enough for a card), else None."""
    if type(value) is float and abs(value) < _WRITTEN_OUT:  # neither NaN nor infinite
        value = int(value)
    elif type(value) is not int:
        return None
    number = abs(value)
    if number < _MAX_NUMBER and (bool(context) or number >= _MIN_NUMBER):
        return str(number)
    return None


def _finder(pattern: Any) -> Callable[[str], list[Span]]:
    def find(text: str) -> list[Span]:
        return [match.span() for match in pattern.finditer(text)]

    return find


def _walk(payload: Any, *, numbers: bool) -> _Walk:
    """Collect every string (values and keys) and the numbers worth a look, iteratively."""
    walk = _Walk()

    def leaf(value: Any, node: _Node, container: Any, slot: Any, context: Context) -> None:
        if isinstance(value, str):
            walk.add(value, (node, container, slot, False), context)
        elif numbers and (digits := _digits(value, context)) is not None:
            walk.numbers.append(((node, container, slot, False), digits, context))

    stack: list[tuple[Any, _Node, Context]] = []
    if isinstance(payload, dict | list | tuple):
        stack.append((payload, None, NO_CONTEXT))
    else:
        leaf(payload, None, None, None, NO_CONTEXT)
    while stack:
        value, node, context = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                entry = (node, value, key)
                child_context = NO_CONTEXT
                if isinstance(key, str):
                    walk.add(key, (entry, value, key, True), NO_CONTEXT)
                    child_context = key_context(_unmarked(key))
                if isinstance(child, dict | list | tuple):
                    stack.append((child, entry, child_context))
                else:
                    leaf(child, entry, value, key, child_context)
        else:
            for index, child in enumerate(value):
                item = (node, value, index)
                if isinstance(child, dict | list | tuple):
                    stack.append((child, item, context))
                else:
                    leaf(child, item, value, index, context)
    return walk


def _result(payload: Any, found: list[tuple[_Place, list[_Hit]]], root: str) -> ScanResult:
    """Findings with paths, and the redacted copy, from the hits of a scan."""
    shown_keys: dict[tuple[int, Any], str] = {}  # keys holding findings, as paths show them
    for (_, container, slot, is_key), hits in found:
        if is_key:
            shown_keys[(id(container), slot)] = _redact(slot, hits)
    findings: dict[tuple[str, str], Finding] = {}
    for (node, *_), hits in found:
        path = _render(node, shown_keys, root)
        for _, _, detector in sorted(hits, key=lambda hit: hit[0]):
            if (detector.name, path) not in findings:
                findings[detector.name, path] = Finding(detector.name, detector.action, path)
    blocking = sorted({f.detector for f in findings.values() if f.action is DlpAction.BLOCK})
    redactions = [
        (place, redact)
        for place, hits in found
        if (redact := [hit for hit in hits if hit[2].action is DlpAction.REDACT])
    ]
    return ScanResult(
        _redacted_copy(payload, redactions) if redactions else payload,
        tuple(findings.values()),
        bool(blocking),
        tuple(blocking),
        bool(redactions),
    )


def _redact(text: str, hits: list[_Hit]) -> str:
    """``text`` with each hit's span replaced; overlapping spans merge under the first's name."""
    parts: list[str] = []
    position = 0
    for start, end, detector in sorted(hits, key=lambda hit: (hit[0], -hit[1])):
        if end <= position:
            continue
        if start >= position:
            parts += [text[position:start], redaction(detector.name)]
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _render(node: _Node, shown_keys: dict[tuple[int, Any], str], root: str) -> str:
    segments: list[str] = []
    while node is not None:
        parent, container, slot = node
        if not isinstance(container, dict):
            segments.append(f"[{slot}]")
        else:
            name = shown_keys.get((id(container), slot), slot)
            if isinstance(name, str) and name.isascii() and name.isidentifier():
                segments.append(f".{name}")
            else:
                segments.append(f"[{json.dumps(name if isinstance(name, str) else str(name))}]")
        node = parent
    return root + "".join(reversed(segments))


def _redacted_copy(payload: Any, redactions: list[tuple[_Place, list[_Hit]]]) -> Any:
    """A copy of ``payload`` with the redactions applied, sharing every untouched subtree; the
    containers on the way to a redaction are copied, the input stays as it was."""
    copies: dict[int, Any] = {}  # id of an original container -> its copy
    root = [payload]
    renamed: dict[int, dict[Any, str]] = {}  # id of an original dict -> {key: new key}
    for (node, container, slot, is_key), hits in redactions:
        if node is None:  # the payload itself is a string or number
            root[0] = (
                _redact(payload, hits) if isinstance(payload, str) else redaction(hits[0][2].name)
            )
            continue
        target = _writable(node, copies, root)
        if is_key:
            renamed.setdefault(id(container), {})[slot] = _redact(slot, hits)
        else:
            value = container[slot]
            target[slot] = (
                _redact(value, hits) if isinstance(value, str) else redaction(hits[0][2].name)
            )
    for owner, names in renamed.items():
        target = copies[owner]
        items = list(target.items())
        target.clear()
        suffixes: dict[str, int] = {}
        for key, value in items:
            name = names.get(key, key)
            while name in target:  # two keys redacted alike, or like a literal key
                suffixes[name] = suffix = suffixes.get(name, 1) + 1
                name = f"{names.get(key, key)}#{suffix}"
            target[name] = value
    return root[0]


def _writable(node: tuple[Any, Any, Any], copies: dict[int, Any], root: list[Any]) -> Any:
    """The copy of the container ``node`` lives in, copying it and its ancestors as needed."""
    chain: list[tuple[Any, Any, Any]] = []
    current: _Node = node
    while current is not None and id(current[1]) not in copies:
        chain.append(current)
        current = current[0]
    for parent, container, _ in reversed(chain):
        copy = dict(container) if isinstance(container, dict) else list(container)
        copies[id(container)] = copy
        if parent is None:
            root[0] = copy
        else:
            copies[id(parent[1])][parent[2]] = copy
    return copies[id(node[1])]
