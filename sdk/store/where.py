"""The filter language: one grammar for ``Store.runs(where=...)``, ``Store.frame``, ``runtel ls --where``
and the UI's filter box.

An expression is a safe subset of Python, parsed with :mod:`ast` and compiled to closures over a
whitelist of node types; nothing is ever passed to ``eval``, and no attribute, call or subscript
reaches a Python object: fields are looked up in the run's JSON documents only.

- Fields: ``name``, ``id``, ``project``, ``status``, ``tags`` (a tuple of strings), ``start_time``
  (seconds since the epoch), ``duration`` (seconds), ``params.<dotted.path>`` (or
  ``params['batch-size']`` for keys that are not identifiers) and ``metrics['<name>'].<stat>``
  (``metrics.loss.last`` for a name without ``/``), stat one of :data:`STATS`.
- Operators: ``==`` (``=`` is read as ``==`` outside string literals), ``!=``, ``<``, ``<=``, ``>``,
  ``>=`` (chains too: ``1e-4 <= params.lr < 1e-2``), ``in``/``not in``, ``and``/``or``/``not``,
  parentheses; literals: strings, numbers (``1e-3``, ``-2``), ``True``/``False``/``None`` and
  tuples or lists of them. A string compared with ``start_time`` is a date (``'2026-11-30'``, local
  time unless it carries an offset).
- Missing values: a comparison with a value a run does not have (a param it never logged, a metric
  of a run without a summary) is False, whatever the operator, ``!=`` and ``not in`` included; so is
  one across types (a string against a number; booleans are not numbers here). ``not`` inverts the
  result: ``not params.opt = 'adam'`` matches the runs without ``opt``.
- ``in``: membership in a tuple, list or ``tags``, a substring of a string (``'mnist' in name``),
  a key of a params object.
- ``best`` is ``min`` for names holding loss, error, perplexity... and ``max`` otherwise (as
  :func:`runtel.store.query.best_direction` decides everywhere in runtel).

Only ``metadata.json``, ``summary.json`` and ``hyperparameters.json`` are read, each once per run and
not again while unchanged (:mod:`runtel.store.scan` caches them), and only those an expression needs.
Metric statistics come from the summary a run writes when it ends: a running run, or one killed
before it could finish, has none yet.
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runtel.errors import FilterSyntaxError
from runtel.store.query import StoredRun, best_direction, live_status

#: The statistics a summary keeps per metric (``best`` is derived from ``min``/``max``).
STATS = ("last", "min", "max", "best", "count", "last_step")
#: Longest expression accepted: far beyond any filter a person writes, short of the parser's limits.
MAX_LENGTH = 10_000
#: Levels of nested expressions a filter may have (``not not ...``, ``- - ...``, ``params.a.b...``).
MAX_DEPTH = 100
#: Fields read from ``metadata.json`` (and ``duration`` from the summary where metadata lacks it).
FIELDS = ("name", "id", "project", "status", "tags", "start_time", "duration")


class _Missing:
    """A value the run does not have: every comparison with it is False."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_Getter = Callable[["_Values"], Any]


#: ``(run folder name, why one of its files cannot be read)``: what a filter had to treat as missing.
Unreadable = list[tuple[str, str]]


class _Values:
    """One run as a filter sees it: each document read at most once, and only when asked for.

    A document that cannot be read counts as empty (its fields are missing), and the reason is
    added to ``unreadable`` when the caller keeps one, so no run is left out unexplained.
    """

    __slots__ = ("_params", "_status", "_summary", "run", "unreadable")

    def __init__(self, run: StoredRun, unreadable: Unreadable | None = None) -> None:
        self.run = run
        self.unreadable = unreadable
        self._summary: dict[str, Any] | None = None
        self._params: dict[str, Any] | None = None
        self._status: str | None = None

    @property
    def summary(self) -> dict[str, Any]:
        if self._summary is None:
            from runtel.store.scan import listing_summary

            self._summary = self._readable(listing_summary(self.run))
        return self._summary

    @property
    def params(self) -> dict[str, Any]:
        if self._params is None:
            from runtel.store.scan import listing_params

            self._params = self._readable(listing_params(self.run))
        return self._params

    @property
    def status(self) -> str:
        if self._status is None:
            self._status = live_status(self.run.metadata)
        return self._status

    def _readable(self, found: dict[str, Any] | str) -> dict[str, Any]:
        if isinstance(found, dict):
            return found
        if self.unreadable is not None:
            self.unreadable.append((self.run.dir.name, found))
        return {}


@dataclass(frozen=True, slots=True)
class RunFilter:
    """A compiled ``where`` expression; :meth:`matches` tells whether a listed run passes it."""

    text: str
    _test: Callable[[_Values], bool]

    def matches(self, run: StoredRun) -> bool:
        """Whether ``run`` (from ``Store.runs()`` or ``Store.run()``) satisfies the expression."""
        try:
            return self._test(_Values(run))
        except RecursionError:
            raise _too_deep(_source(self.text)) from None

    def select(self, runs: Iterable[StoredRun], unreadable: Unreadable | None = None) -> list[StoredRun]:
        """The runs that match, in the order given; ``unreadable`` (when given) receives each run folder
        whose summary or params the expression needed and could not read, with the reason."""
        test = self._test
        try:
            return [run for run in runs if test(_Values(run, unreadable))]
        except RecursionError:  # little stack left where this was called: the filter's depth is refused
            raise _too_deep(_source(self.text)) from None


def compile_where(text: str) -> RunFilter:
    """``text`` compiled once, to be matched against any number of runs.

    Raises :class:`~runtel.errors.FilterSyntaxError` (a ``ValueError``) for a syntax error, an unknown
    field or stat, or any construct outside the grammar; the message shows the expression with a caret
    under the column.
    """
    source = _source(text)
    tree = _parse(source)
    _check_depth(source, tree.body)
    try:
        return RunFilter(text, _boolean(source, tree.body))
    except RecursionError:
        raise _too_deep(source) from None


def _check_depth(source: _Source, body: ast.expr) -> None:
    """Refuse expressions nested over :data:`MAX_DEPTH` deep, at the first node too deep: compiling
    and matching recurse once per level, and must never hit Python's recursion limit."""
    level: list[ast.AST] = [body]
    for _ in range(MAX_DEPTH):
        level = [
            child for node in level for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)
        ]
        if not level:
            return
    raise _refuse(
        source, level[0], f"nested too deeply (over {MAX_DEPTH} levels of not, signs, brackets or keys)"
    )


_CONDITIONS = frozenset({"=", "==", "!=", "<", "<=", ">", ">="})
_KEYWORDS = frozenset({"and", "or", "not", "in"})


def looks_like_expression(text: str) -> bool:
    """Whether ``text`` holds a comparison or ``and``/``or``/``not``/``in`` outside string literals: what
    tells a filter expression from a plain name typed into the same box (the UI's filter)."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(" ".join(text.splitlines())).readline):
            if (token.type == tokenize.OP and token.string in _CONDITIONS) or (
                token.type == tokenize.NAME and token.string in _KEYWORDS
            ):
                return True
    except (tokenize.TokenError, SyntaxError):
        return any(sign in text for sign in _CONDITIONS)
    return False


def field_reader(field_text: str) -> Callable[[StoredRun], Any]:
    """A function giving one field's value for a run (``"params.lr"``, ``"metrics['val/acc'].max"``), or
    :data:`MISSING` when the run has none: what sorting and grouping by a field read."""
    getter = _field(field_text)
    return lambda run: getter(_Values(run))


def sort_key(field_text: str) -> Callable[[StoredRun], tuple[Any, ...]]:
    """A key for ``sorted(runs, key=...)`` by one field (``"params.lr"``, ``"metrics['val/acc'].max"``).

    Numbers come before strings, then booleans, then other values (by their JSON text); a run without
    the value, or whose value is NaN, comes last in ascending order. :func:`sort_runs` keeps those last
    in descending order too.
    """
    getter = _field(field_text)
    return lambda run: _order_of(getter(_Values(run)))


def sort_runs(
    runs: Iterable[StoredRun],
    field_text: str,
    *,
    descending: bool = False,
    unreadable: Unreadable | None = None,
) -> list[StoredRun]:
    """``runs`` sorted by ``field_text`` (stable), runs without a value (or NaN) last either way;
    ``unreadable`` as for :meth:`RunFilter.select`."""
    getter = _field(field_text)
    keyed = [(_order_of(getter(_Values(run, unreadable))), run) for run in runs]
    present = [item for item in keyed if item[0][0] == 0]
    absent = [item[1] for item in keyed if item[0][0] != 0]
    present.sort(key=lambda item: item[0], reverse=descending)
    return [item[1] for item in present] + absent


def _field(field_text: str) -> _Getter:
    source = _source(field_text)
    tree = _parse(source)
    if not isinstance(tree.body, (ast.Name, ast.Attribute, ast.Subscript)):
        raise _refuse(source, tree.body, "a field is one name, e.g. params.lr or metrics['val/acc'].max")
    return _value(source, tree.body)


def _order_of(value: Any) -> tuple[Any, ...]:
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return (1,)
    if isinstance(value, bool):
        return (0, 2, value)
    if isinstance(value, (int, float)):
        return (0, 0, value)
    if isinstance(value, str):
        return (0, 1, value)
    import json

    return (0, 3, json.dumps(value, sort_keys=True, default=str))


# ---------------------------------------------------------------------------------------- parsing
@dataclass(frozen=True, slots=True)
class _Source:
    """The user's text on one line, what ``ast`` parses (``=`` made ``==``, leading blanks cut), and
    the columns of the user's text where each ``=`` was, so errors point into what the user wrote."""

    text: str
    parsed: str
    lead: int
    widened: tuple[int, ...]

    def column(self, parsed_column: int) -> int:
        """A 0-based character column of ``parsed`` as a 1-based column of ``text``."""
        at = parsed_column + self.lead
        shift = sum(1 for index, column in enumerate(self.widened) if at > column + index)
        return at - shift + 1


def _source(text: object) -> _Source:
    if not isinstance(text, str):
        raise FilterSyntaxError(
            f'a filter is a string expression such as "params.lr < 1e-3", got {type(text).__name__}',
            expression=str(text),
            column=None,
        )
    line = " ".join(text.splitlines()).replace("\t", " ")  # one line: a pasted line break is a blank
    if not line.strip():
        raise FilterSyntaxError(
            "the filter is empty: give an expression such as \"status = 'completed'\"",
            expression=text,
            column=None,
        )
    widened: list[int] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type == tokenize.OP and token.string == "=":
                widened.append(token.start[1])
    except (tokenize.TokenError, SyntaxError):
        pass  # an unterminated string or bracket: ast names it below, on the text as given
    parsed = line
    for column in reversed(widened):
        parsed = parsed[:column] + "==" + parsed[column + 1 :]
    stripped = parsed.lstrip()
    lead = len(parsed) - len(stripped)
    return _Source(line, stripped, lead, tuple(widened))


def _parse(source: _Source) -> ast.Expression:
    if len(source.text) > MAX_LENGTH:
        raise FilterSyntaxError(
            f"invalid filter: {len(source.text):,} characters, over the {MAX_LENGTH:,} a filter may have",
            expression=source.text[:80] + "...",
            column=None,
        )
    try:
        return ast.parse(source.parsed, mode="eval")
    except (RecursionError, MemoryError):
        raise _too_deep(source) from None
    except SyntaxError as exc:
        if not exc.offset or exc.offset > len(source.parsed):  # Python's way of saying "at the end"
            column = len(source.text.rstrip()) + 1
            raise FilterSyntaxError(
                "invalid filter: the expression ends before it is complete",
                expression=source.text,
                column=column,
            ) from None
        column = source.column(exc.offset - 1)
        raise FilterSyntaxError(f"invalid filter: {exc.msg}", expression=source.text, column=column) from None


def _too_deep(source: _Source) -> FilterSyntaxError:
    return FilterSyntaxError(
        "invalid filter: nested too deeply (write fewer nested not, signs or keys)",
        expression=source.text[:80] + ("..." if len(source.text) > 80 else ""),
        column=None,
    )


def _refuse(source: _Source, node: ast.AST, problem: str) -> FilterSyntaxError:
    """An error pointing at ``node`` (ast counts UTF-8 bytes; the caret counts characters)."""
    byte_offset = getattr(node, "col_offset", 0)
    if isinstance(node, ast.BinOp) and node.left.end_col_offset is not None:  # at the operator
        after_left = source.parsed.encode()[node.left.end_col_offset :]
        byte_offset = node.left.end_col_offset + len(after_left) - len(after_left.lstrip())
    characters = len(source.parsed.encode()[:byte_offset].decode(errors="ignore"))
    return FilterSyntaxError(
        f"invalid filter: {problem}", expression=source.text, column=source.column(characters)
    )


# ---------------------------------------------------------------------------------------- compiling
def _boolean(source: _Source, node: ast.AST) -> Callable[[_Values], bool]:
    """A node in a place where True/False is wanted: and/or/not, a comparison, or a value's truth."""
    if isinstance(node, ast.BoolOp):
        # compiled in the order written (errors too), run cheapest first: every part is pure, so the
        # order changes only which files are read, never the result
        compiled = [(_reads(value), _boolean(source, value)) for value in node.values]
        parts = [part for _, part in sorted(compiled, key=lambda item: item[0])]
        if isinstance(node.op, ast.And):
            return lambda run: all(part(run) for part in parts)
        return lambda run: any(part(run) for part in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _boolean(source, node.operand)
        return lambda run: not inner(run)
    if isinstance(node, ast.Compare):
        return _compare(source, node)
    getter = _value(source, node)
    return lambda run: _truth(getter(run))


def _reads(node: ast.AST) -> int:
    """What evaluating ``node`` reads beyond the listing's metadata: 0 nothing, 1 params, 2 the summary."""
    names = {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}
    return 2 if names & {"metrics", "duration"} else 1 if "params" in names else 0


def _truth(value: Any) -> bool:
    return value is not MISSING and bool(value)


_ORDERING: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}


def _compare(source: _Source, node: ast.Compare) -> Callable[[_Values], bool]:
    operands = [node.left, *node.comparators]
    getters = [_operand(source, operands, at) for at in range(len(operands))]
    tests: list[Callable[[Any, Any], bool]] = []
    for op in node.ops:
        test = _operator(op)
        if test is None:
            hint = " (write == None or != None)" if isinstance(op, (ast.Is, ast.IsNot)) else ""
            raise _refuse(source, node, f"the operator {type(op).__name__} is not in the grammar{hint}")
        tests.append(test)
    if len(tests) == 1:
        left, right, only = getters[0], getters[1], tests[0]
        return lambda run: only(left(run), right(run))

    def chained(run: _Values) -> bool:
        previous = getters[0](run)
        for test, getter in zip(tests, getters[1:], strict=True):
            current = getter(run)
            if not test(previous, current):
                return False
            previous = current
        return True

    return chained


def _operator(op: ast.cmpop) -> Callable[[Any, Any], bool] | None:
    if isinstance(op, ast.Eq):
        return lambda a, b: a is not MISSING and b is not MISSING and _equal(a, b)
    if isinstance(op, ast.NotEq):
        return lambda a, b: a is not MISSING and b is not MISSING and not _equal(a, b)
    if isinstance(op, ast.In):
        return lambda a, b: _contains(b, a) is True
    if isinstance(op, ast.NotIn):
        return lambda a, b: _contains(b, a) is False
    ordering = _ORDERING.get(type(op))
    if ordering is None:
        return None
    return lambda a, b: _comparable(a, b) and ordering(a, b)


def _kind(value: Any) -> int:
    """0 number, 1 string, 2 boolean, 3 None, 4 sequence, 5 object, 6 missing or anything else."""
    if isinstance(value, bool):
        return 2
    if isinstance(value, (int, float)):
        return 0
    if isinstance(value, str):
        return 1
    if value is None:
        return 3
    if isinstance(value, (list, tuple)):
        return 4
    if isinstance(value, dict):
        return 5
    return 6


def _comparable(a: Any, b: Any) -> bool:
    """Ordered comparisons only between two numbers or two strings."""
    kind = _kind(a)
    return kind in (0, 1) and kind == _kind(b)


def _equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b) or kind == 6:
        return False
    if kind == 4:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _contains(container: Any, item: Any) -> bool | None:
    """Whether ``item`` is in ``container``; None when the question has no answer (missing, a number)."""
    if item is MISSING or container is MISSING:
        return None
    kind = _kind(container)
    if kind == 4:
        return any(_equal(item, element) for element in container)
    if kind == 1:
        return item in container if isinstance(item, str) else None
    if kind == 5:
        return item in container if isinstance(item, str) else None
    return None


def _operand(source: _Source, operands: Sequence[ast.expr], at: int) -> _Getter:
    """Operand ``at`` of a comparison; a string beside ``start_time`` is read as a date."""
    node = operands[at]
    neighbours = [operands[i] for i in (at - 1, at + 1) if 0 <= i < len(operands)]
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and any(isinstance(other, ast.Name) and other.id == "start_time" for other in neighbours)
    ):
        stamp = _timestamp(source, node, node.value)
        return lambda run: stamp
    return _value(source, node)


def _timestamp(source: _Source, node: ast.AST, text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _refuse(
            source, node, f"start_time is compared with {text!r}, which is not a date such as '2026-11-30'"
        ) from None
    return moment.timestamp()


def _value(source: _Source, node: ast.AST) -> _Getter:
    """A node that stands for a value: a literal, a field, a tuple/list, a signed number."""
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (str, bool, int, float)):
            constant = node.value
            return lambda run: constant
        raise _refuse(source, node, f"{type(node.value).__name__} literals are not in the grammar")
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_value(source, element) for element in node.elts]
        return lambda run: tuple(item(run) for item in items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(source, node.operand)
        if isinstance(node.op, ast.UAdd):
            return lambda run: _signed(inner(run), 1)
        return lambda run: _signed(inner(run), -1)
    if isinstance(node, ast.Name):
        return _named(source, node)
    if isinstance(node, (ast.Attribute, ast.Subscript)):
        return _path(source, node)
    if isinstance(node, (ast.BoolOp, ast.Compare)) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        raise _refuse(source, node, "a condition cannot be compared; join conditions with and/or")
    raise _refuse(source, node, f"{_described(node)} is not allowed in a filter")


def _described(node: ast.AST) -> str:
    kinds = {
        ast.Call: "a function call",
        ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator",
        ast.BinOp: "arithmetic",
        ast.Set: "a set (use a tuple: ('a', 'b'))",
        ast.Dict: "a dict",
        ast.NamedExpr: "an assignment",
        ast.IfExp: "a conditional expression",
        ast.Starred: "unpacking",
        ast.JoinedStr: "an f-string",
        ast.Await: "await",
    }
    return kinds.get(type(node), type(node).__name__)


def _signed(value: Any, sign: int) -> Any:
    if _kind(value) != 0:
        return MISSING
    return value if sign > 0 else -value


def _named(source: _Source, node: ast.Name) -> _Getter:
    name = node.id
    if name == "name":
        return lambda run: run.run.name
    if name == "id":
        return lambda run: run.run.id
    if name == "project":
        return lambda run: run.run.project
    if name == "status":
        return lambda run: run.status
    if name == "tags":
        return _tags
    if name == "start_time":
        return lambda run: _number_or_missing(run.run.metadata.get("start_time"))
    if name == "duration":
        return _duration
    if name in ("params", "metrics"):
        example = "params.lr" if name == "params" else "metrics['val/acc'].max"
        raise _refuse(source, node, f"{name} needs a key, e.g. {example}")
    raise _refuse(
        source, node, f"unknown field {name!r}; fields are {', '.join(FIELDS)}, params.<key> and metrics"
    )


def _tags(run: _Values) -> Any:
    tags = run.run.metadata.get("tags")
    return tuple(tags) if isinstance(tags, list) else ()


def _number_or_missing(value: Any) -> Any:
    return value if _kind(value) == 0 else MISSING


def _duration(run: _Values) -> Any:
    found = duration_of(run.run.metadata, lambda: run.summary)
    return MISSING if found is None else found


def duration_of(
    metadata: dict[str, Any], summary: dict[str, Any] | Callable[[], dict[str, Any]]
) -> float | None:
    """Seconds: the recorded duration (metadata, else the summary, read only when needed), else a live
    run's time up to its last heartbeat; None when neither is known."""
    recorded = _real(metadata.get("duration"))
    if recorded is None:
        recorded = _real((summary() if callable(summary) else summary).get("duration"))
    if recorded is not None:
        return recorded
    start, end = _real(metadata.get("start_time")), _real(metadata.get("end_time", metadata.get("heartbeat")))
    return end - start if start is not None and end is not None and end >= start else None


def _real(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _segments(source: _Source, node: ast.AST) -> tuple[ast.Name, list[tuple[str, bool, ast.AST]]]:
    """``params.a['b'].c`` as its root name and ``[(key, from_subscript, node), ...]``."""
    segments: list[tuple[str, bool, ast.AST]] = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute):
            segments.append((node.attr, False, node))
        else:
            key = node.slice
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise _refuse(source, node, "a subscript takes one string, e.g. metrics['val/acc']")
            segments.append((key.value, True, node))
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in ("params", "metrics"):
        raise _refuse(source, node, "only params and metrics have keys (params.lr, metrics['val/acc'].max)")
    segments.reverse()
    return node, segments


def _path(source: _Source, node: ast.Attribute | ast.Subscript) -> _Getter:
    root, segments = _segments(source, node)
    if root.id == "params":
        keys = tuple(key for key, _, _ in segments)
        return lambda run: _param(run.params, keys)
    return _metric(source, node, segments)


def _param(document: Any, keys: tuple[str, ...]) -> Any:
    """The value at ``keys`` in nested params; a key holding dots (``{"opt.lr": ...}``) matches too."""
    if not keys:
        return document
    if not isinstance(document, dict):
        return MISSING
    for taken in range(1, len(keys) + 1):
        key = keys[0] if taken == 1 else ".".join(keys[:taken])
        if key in document:
            found = _param(document[key], keys[taken:])
            if found is not MISSING:
                return found
    return MISSING


def _metric(source: _Source, node: ast.AST, segments: list[tuple[str, bool, ast.AST]]) -> _Getter:
    stat, stat_subscripted, stat_node = segments[-1]
    if len(segments) < 2 or stat_subscripted:
        raise _refuse(
            source, node, f"a metric needs a stat after its name: one of {', '.join(STATS)}, e.g. .max"
        )
    named = segments[:-1]
    if named[0][1]:
        if len(named) != 1:
            raise _refuse(source, node, "write one name in metrics['...'], then the stat: metrics['a/b'].max")
        name = named[0][0]
    elif any(subscripted for _, subscripted, _ in named):
        raise _refuse(source, node, "write a metric name either as metrics['a/b'] or as metrics.a, not both")
    else:
        name = ".".join(key for key, _, _ in named)
    if stat not in STATS:
        raise _refuse(source, stat_node, f"unknown metric stat {stat!r}; stats are {', '.join(STATS)}")
    key = ("min" if best_direction(name) == "min" else "max") if stat == "best" else stat
    wanted_kind = 0

    def value(run: _Values) -> Any:
        metrics = run.summary.get("metrics")
        stats = metrics.get(name) if isinstance(metrics, dict) else None
        found = stats.get(key, MISSING) if isinstance(stats, dict) else MISSING
        return found if _kind(found) == wanted_kind else MISSING

    return value
