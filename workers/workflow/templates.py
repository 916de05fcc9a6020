"""Templates: Jinja2's immutable sandbox with strict undefined names, resource caps, ``render`` and ``evaluate``.

A string that is exactly one ``{{ expression }}`` yields the expression's native value (a list
stays a list, an int an int); any other template renders as text, in which a dict or list
appears as JSON (never a Python repr). Values from the context (webhook payloads, API answers)
are data and are never rendered again, so a ticket containing ``{{ 7*7 }}`` stays literal.
Compiled templates are cached by their text: a 10,000-item fan-out compiles once.

A template is written by whoever writes the workflow, but it runs inside a worker that serves
other runs, so one template may not take the worker's memory or time. Every template render gets
a budget (``MAX_SIZE``, ``MAX_LOOP_ITERATIONS``, ``MAX_RENDER_SECONDS``), checked:

- before any operation that multiplies its input (``*``, ``**``, ``%``, ``~``, ``+``, the filters
  center, indent, wordwrap, replace, join, format, batch, slice and the serialising ones, the
  string methods center/ljust/rjust/zfill/expandtabs/replace/join/translate/format): the size the
  result would have is estimated first, counting a value shared by reference once per use;
- after every filter, call and operator: the size of what it built;
- at each loop iteration, call and filter: the iteration count and the clock;
- while the text is written out: its total size.

A cap that is hit raises ``TemplateError`` (reason ``"limit"``) naming the step and the expression.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any, NamedTuple

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
)
from markupsafe import Markup

from workers.workflow.errors import TemplateError
from workers.workflow.vectors import cosine, top_k

__all__ = ["CONTEXT_NAMES", "ITEM_NAMES", "MAX_LOOP_ITERATIONS", "MAX_RENDER_SECONDS", "MAX_SIZE", "compiled",
           "evaluate", "has_template", "parsed", "render", "shown"]

#: Names the engine puts in every template context; ``ITEM_NAMES`` only in a fan-out step's input.
CONTEXT_NAMES = frozenset({"inputs", "steps", "vars", "run"})
ITEM_NAMES = frozenset({"item", "index"})

#: Characters (or items) one operation may build, and the most text one template may render:
#: 4 million characters is about the largest prompt a model takes (1M tokens).
MAX_SIZE = 4_000_000
#: ``{% for %}`` iterations per template, nested loops counted together (the sandbox's range() stops at 100,000).
MAX_LOOP_ITERATIONS = 100_000
#: Wall-clock seconds one template may render (checked at each loop iteration, call and filter).
MAX_RENDER_SECONDS = 2.0
_MAX_POWER_BITS = 100_000


# ---------------------------------------------------------------- the budget of one render


class _LimitExceeded(SecurityError):
    """A resource cap was hit; becomes a TemplateError with reason ``limit``."""


@dataclass
class _Budget:
    deadline: float
    loops: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _tick() -> None:
    """One call, filter or loop iteration: the clock is checked (outside a render there is no budget)."""
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise _LimitExceeded(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")


def _weight(value: Any, limit: int = MAX_SIZE) -> int:
    """Characters plus items in a value, a shared value counted at each use; stops counting past ``limit``.

    This is what serialising the value costs: ``[s, s, s]`` weighs three times ``s``, which is how
    small templates build huge texts.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 1
        elif isinstance(item, Mapping):
            total += len(item) + 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item) + 1
            stack.extend(item)
        else:
            total += 1
        if total > limit:
            break
    return total


def _refuse_if(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise _LimitExceeded(f"{what} would build more than {MAX_SIZE} characters or items (about {size})")


def _check_built(value: Any, what: str) -> Any:
    """After an operation: what it built is within the cap (``len`` only, so this costs nothing)."""
    if isinstance(value, str | bytes | list | tuple | dict) and len(value) > MAX_SIZE:
        raise _LimitExceeded(f"{what} built more than {MAX_SIZE} characters or items")
    return value


def _check_heavy(value: Any, what: str) -> None:
    """Before serialising or repeating a value: its weight, shared references included, is within the cap."""
    if not isinstance(value, str | bytes):  # a string's size is checked in O(1) by the caller's estimate
        _refuse_if(_weight(value), what)


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")


def _check_printf(template: Any, what: str) -> None:
    """``'%50000000s' % x`` pads to 50 MB: widths and precisions are capped, ``*`` (taken from an argument) refused."""
    if not isinstance(template, str):
        return
    for match in _PRINTF_SPEC.finditer(template):
        for part in match.groups():
            if part == "*":
                raise _LimitExceeded(f"{what}: a width or precision taken from an argument (*) is not allowed")
            if part and int(part) > MAX_SIZE:
                raise _LimitExceeded(f"{what}: width or precision {part} is more than {MAX_SIZE}")


def _check_format_spec(spec: str) -> None:
    for number in re.findall(r"\d+", spec):
        if int(number) > MAX_SIZE:
            raise _LimitExceeded(f"format width or precision {number} is more than {MAX_SIZE}")


def _replace_size(text: str, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * (len(new) - len(old))


def _join_size(separator: Any, items: Any) -> int:
    if not isinstance(items, list | tuple):
        items = list(items) if isinstance(items, Iterable) and not isinstance(items, str | Mapping) else [items]
    return _weight(items) + len(items) * len(separator if isinstance(separator, str) else str(separator))


# ---------------------------------------------------------------- filters, string methods, operators

#: Filters that turn their first argument into text: it is weighed first.
_SERIALISING_FILTERS = frozenset({
    "capitalize", "e", "escape", "forceescape", "lower", "pprint", "safe", "string", "striptags", "sum", "title",
    "tojson", "trim", "truncate", "upper", "urlencode", "urlize", "wordcount", "xmlattr",
})


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str, default: Any) -> Any:
    if len(args) > position:
        return args[position]
    return kwargs.get(name, default)


def _check_filter_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Estimate, before it runs, what a filter that can multiply its input would build."""
    value = args[0] if args else None
    what = f"the filter {name}"
    if name in _SERIALISING_FILTERS:
        _check_heavy(value, what)
    text = value if isinstance(value, str) else None
    if name == "center":
        width = _argument(args, kwargs, 1, "width", 80)
        if isinstance(width, int):
            _refuse_if(width, what)
    elif name == "indent" and text is not None:
        width = _argument(args, kwargs, 1, "width", 4)
        pad = width if isinstance(width, int) else len(str(width))
        _refuse_if(len(text) + (text.count("\n") + 1) * pad, what)
    elif name == "wordwrap" and text is not None:
        width = _argument(args, kwargs, 1, "width", 79)
        wrapstring = _argument(args, kwargs, 3, "wrapstring", None) or "\n"
        lines = len(text) // max(width, 1) + text.count(" ") + 1 if isinstance(width, int) else 1
        _refuse_if(len(text) + lines * len(str(wrapstring)), what)
    elif name == "replace" and text is not None:
        _refuse_if(_replace_size(text, _argument(args, kwargs, 1, "old", ""), _argument(args, kwargs, 2, "new", ""),
                                 _argument(args, kwargs, 3, "count", None)), what)
    elif name == "join" and value is not None and _argument(args, kwargs, 2, "attribute", None) is None:
        _refuse_if(_join_size(_argument(args, kwargs, 1, "d", ""), value), what)
    elif name == "format":
        _check_printf(value, what)
        _check_heavy(list(args[1:]) + list(kwargs.values()), what)
    elif name in ("batch", "slice"):
        count = _argument(args, kwargs, 1, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int):
            _refuse_if(count, what)


def _capped_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A builtin filter with the budget around it; keeps Jinja's pass_context/... marker."""
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0  # context/env first

    @wraps(function)
    def capped(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_filter_call(name, args[skip:], kwargs)
        return _check_built(function(*args, **kwargs), f"the filter {name}")

    return capped


def _check_str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``'a'.center(50000000)`` and friends: the string methods that can build more than their input."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes):
        return
    name = getattr(method, "__name__", "")
    what = f"the method {name}"
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _argument(args, kwargs, 0, "width", 0)
        if isinstance(width, int):
            _refuse_if(width, what)
    elif name == "expandtabs":
        size = _argument(args, kwargs, 0, "tabsize", 8)
        if isinstance(size, int):
            _refuse_if(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * size, what)
    elif name == "replace" and isinstance(owner, str):
        _refuse_if(_replace_size(owner, _argument(args, kwargs, 0, "old", ""), _argument(args, kwargs, 1, "new", ""),
                                 _argument(args, kwargs, 2, "count", -1)), what)
    elif name == "join" and args:
        _refuse_if(_join_size(owner, args[0]), what)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        _refuse_if(len(owner) * longest, what)


class _CappedFormatterMixin:
    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        _check_heavy(value, "str.format")
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _CappedFormatter(_CappedFormatterMixin, SandboxedFormatter):
    """``'{:>50000000}'.format(x)``: the resolved spec of each field is checked before it pads."""


class _CappedEscapeFormatter(_CappedFormatterMixin, SandboxedEscapeFormatter):
    """The same for ``Markup.format`` (``|tojson`` gives Markup)."""


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` going through the environment so its result is capped too."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_capped((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


@pass_context
def _loop_guard(_context: Any, iterable: Any) -> Iterator[Any]:
    """Wraps every ``{% for %}`` iterable: counts iterations against the budget and checks the clock."""
    budget = _BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.loops += 1
            if budget.loops > MAX_LOOP_ITERATIONS:
                raise _LimitExceeded(f"loops ran more than {MAX_LOOP_ITERATIONS} iterations")
            if time.monotonic() > budget.deadline:
                raise _LimitExceeded(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")
        yield item


_LOOP_GUARD = "_pack_loop_guard"


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    return str(value)


def _finalize(value: Any) -> Any:
    """A dict or list written into text is JSON (``{{ steps }}``, ``{{ inputs.tags }}``), never a Python repr."""
    if isinstance(value, Mapping | list | tuple) and not isinstance(value, Undefined):
        _check_heavy(value, "writing this value as JSON")
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return value


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the budget: size caps on operators, filters, calls; loop and time caps."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        what = f"the operator {op}"
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and not isinstance(times, bool):
                    _refuse_if(len(seq) * times, what)
                    if not isinstance(seq, str) and times > 1:
                        _refuse_if(_weight(seq, MAX_SIZE // times + 1) * times, what)
        elif op == "**":
            if (isinstance(left, int) and isinstance(right, int) and right > 0
                    and max(left.bit_length(), 1) * right > _MAX_POWER_BITS and abs(left) > 1):
                raise _LimitExceeded("the result of this power is too large")
        elif op == "%" and isinstance(left, str):
            _check_printf(left, what)
            _check_heavy(right, what)
        elif op == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _refuse_if(len(left) + len(right), what)
        return _check_built(super().call_binop(context, op, left, right), what)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        _tick()
        _check_str_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_built(result, f"calling {getattr(__obj, '__name__', 'a function')}")

    def concat_capped(self, parts: tuple[Any, ...]) -> str:
        """``a ~ b``: each part's text, capped in total."""
        texts = [self.finalize(p) if isinstance(p, Mapping | list | tuple) else p for p in parts]  # type: ignore[misc]
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        _refuse_if(sum(len(t) for t in texts), "the operator ~")
        return "".join(texts)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's own wrapper for ``str.format``/``format_map``, with the capped formatters."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        owner: str = value.__self__
        formatter = (_CappedEscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup)
                     else _CappedFormatter(self))
        is_format_map = value.__name__ == "format_map"

        @wraps(wrapped)
        def capped(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            return type(owner)(formatter.vformat(owner, args, kwargs))

        return capped

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Every ``{% for %}`` iterates through the loop guard."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_GUARD, [], [], None, None, lineno=loop.iter.lineno)
        return tree


def _fromjson(value: Any) -> Any:
    """Parse JSON text (an API's JSON-mode answer); anything else passes through unchanged."""
    return json.loads(value) if isinstance(value, str | bytes) else value


_ENV = _SandboxEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                           finalize=_finalize)
_ENV.filters["fromjson"] = _fromjson
_ENV.filters.update(cosine=cosine, top_k=top_k)  # similarity routing (workers.workflow.vectors)
_ENV.filters.update({name: _capped_filter(name, function) for name, function in _ENV.filters.items()})
_ENV.filters[_LOOP_GUARD] = _loop_guard
del _ENV.globals["lipsum"]  # builds paragraphs of random text: no use in a workflow, and a way to fill memory

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{-?(?P<expr>(?:(?!\}\}|\{\{|\{%).)*?)-?\}\}\s*$", re.DOTALL)
_CONTAINER_LITERALS = (nodes.List, nodes.Dict, nodes.Tuple)


# ---------------------------------------------------------------- compiling and rendering


class Compiled(NamedTuple):
    expression: bool  # True: call ``run(context)`` for a native value; False: ``run.generate(context)``
    run: Any
    deep: bool  # the expression builds lists/dicts: look inside the result for undefined values


def has_template(text: str) -> bool:
    """Whether a definition string is a template at all (plain text costs nothing to render)."""
    return "{{" in text or "{%" in text


@lru_cache(maxsize=4096)
def parsed(text: str) -> nodes.Template:
    """The template's AST (raises TemplateSyntaxError); used for load-time checks."""
    return _ENV.parse(text)


@lru_cache(maxsize=8192)
def compiled(text: str) -> Compiled:
    """Compile once per distinct text: fan-outs and repeated runs render the same templates many times."""
    match = _SINGLE_EXPRESSION.match(text)
    if match:
        expr = match.group("expr")
        expression = _ENV.compile_expression(expr, undefined_to_none=False)
        deep = any(True for _ in parsed(text).find_all(_CONTAINER_LITERALS))
        return Compiled(True, expression, deep)
    return Compiled(False, _ENV.from_string(text), False)


def _native(value: Any, deep: bool) -> Any:
    """Make an expression's value plain data: undefined raises, generators become lists."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined (or the sandbox's unsafe marker) raises its own error here
    if isinstance(value, str):
        return str(value) if type(value) is not str else value  # Markup from |tojson -> plain text
    if isinstance(value, Iterator | range | tuple | KeysView | ValuesView):
        value = list(value)
    if deep:
        if isinstance(value, list):
            return [_native(v, True) for v in value]
        if isinstance(value, dict):
            return {k: _native(v, True) for k, v in value.items()}
    return value


def shown(text: str) -> str:
    """A template as quoted in an error: stripped, at most 200 characters."""
    text = text.strip()
    return text if len(text) <= 200 else text[:197] + "..."


def _template_error(text: str, step: str | None, detail: str, reason: str) -> TemplateError:
    where = f"step {step!r}: " if step else ""
    return TemplateError(f"{where}template {shown(text)}: {detail}", step=step, expression=text.strip(),
                         reason=reason)


def _render_text(template: Any, context: Mapping[str, Any]) -> str:
    """Render a text template piece by piece, stopping as soon as the text passes the cap."""
    parts: list[str] = []
    size = 0
    for part in template.generate(context):
        size += len(part)
        if size > MAX_SIZE:
            raise _LimitExceeded(f"the rendered text is longer than {MAX_SIZE} characters")
        parts.append(part)
    return "".join(parts)


def _render_string(text: str, context: Mapping[str, Any], step: str | None) -> Any:
    if not has_template(text):
        return text
    token = _BUDGET.set(_Budget(time.monotonic() + MAX_RENDER_SECONDS))
    try:
        template = compiled(text)
        if template.expression:
            value = _native(template.run(context), template.deep)
            if template.deep:
                _check_heavy(value, "the value built")
            return value
        return _render_text(template.run, context)
    except _LimitExceeded as exc:
        raise _template_error(text, step, f"exceeds a limit of the sandbox: {exc}", "limit") from None
    except SecurityError as exc:
        raise _template_error(text, step, f"not allowed in the sandbox ({exc})", "sandbox") from None
    except TemplateSyntaxError as exc:
        raise _template_error(text, step, f"syntax error: {exc.message}", "syntax") from None
    except UndefinedError as exc:
        raise _template_error(text, step, str(exc.message), "undefined") from None
    except RecursionError:
        raise _template_error(text, step, "recursion too deep (a macro calling itself?)", "limit") from None
    except MemoryError:
        raise _template_error(text, step, "ran out of memory", "limit") from None
    except Exception as exc:  # a filter or operator error is still the step's fault, never a crash
        raise _template_error(text, step, f"{type(exc).__name__}: {exc}", type(exc).__name__) from None
    finally:
        _BUDGET.reset(token)


def render(value: Any, context: Mapping[str, Any], *, step: str | None = None) -> Any:
    """Render the templates inside a definition value (dicts and lists walked, keys left alone).

    Only strings of the definition are templates: what they produce is returned as data and never
    rendered again, so payload text such as ``{{ 7*7 }}`` stays literal.
    """
    if isinstance(value, str):
        return _render_string(value, context, step)
    if isinstance(value, dict):
        return {k: render(v, context, step=step) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, step=step) for v in value]
    return value


#: Text an ``if:`` renders to that counts as false (after trimming, any case).
FALSE_TEXTS = frozenset({"", "false", "0", "no", "none", "null"})


def evaluate(condition: str, context: Mapping[str, Any], *, step: str | None = None) -> bool:
    """A condition's truthiness; text templates give text, so ``"False"``, ``"0"`` and ``""`` count as false."""
    value = render(condition, context, step=step)
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_TEXTS
    return bool(value)

