"""Ollama Modelfiles whose TEMPLATE renders the prompt exactly as the model's own chat template.

A GGUF served by Ollama with the wrong TEMPLATE or stop token answers in gibberish or never
stops, the most common complaint after a fine-tune. So the TEMPLATE is not guessed: the text the
tokenizer's chat template writes around each role (ChatML, Llama 3, Phi-3, Gemma, Mistral...) is
recovered by rendering conversations of sentinel strings, then the TEMPLATE is rendered for probe
conversations and compared with ``tokenizer.apply_chat_template``: by Go's own text/template, with the
data Ollama passes (core/shipping/gotemplate/main.go, built once into the cache), where Go is installed, and
always by :func:`render` (the subset of Go's text/template the generated TEMPLATE uses). A template
that does not match is an error, never a silently wrong Modelfile.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GO_SOURCE = Path(__file__).with_name("gotemplate")
"""A Go program that renders a TEMPLATE as Ollama's chat endpoint does (standard library only)."""

PROBES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello"}],
    [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Classify: my card was charged twice"},
    ],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?\nTwo lines."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ],
]


class TemplateError(ValueError):
    """The chat template has no Ollama equivalent here, or the generated one renders differently."""


# -- Modelfile -----------------------------------------------------------------------------------


@dataclass
class Parts:
    """The literal text a chat template writes around each message, recovered by rendering
    conversations of sentinel strings (for ChatML, Llama 3, Phi-3, Gemma, Mistral and kin)."""

    head: str  # before the first message when there is no system message (BOS, a default system prompt)
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str  # the assistant header add_generation_prompt appends
    system_head: str | None = None  # before a leading system message's content; None: no system role
    system_end: str = ""

    def default_system(self) -> str:
        """The system prompt the template writes when a conversation has none ('' when it writes none):
        what a Modelfile's SYSTEM should say, since Ollama passes SYSTEM to the template as a system message."""
        head, start, end = self.head, self.system_head, self.system_end
        if start is None or head == start or not head.startswith(start) or not head.endswith(end):
            return ""
        return head[len(start) : len(head) - len(end)] if end else head[len(start) :]

    def go_template(self) -> str:
        texts = [self.head, *self.user, *self.assistant, self.generation, self.system_head or "", self.system_end]
        if any("{{" in t for t in texts):
            raise TemplateError("the chat template writes '{{', which an Ollama template cannot hold as text")
        first_is_system = 'and .Messages (eq (index .Messages 0).Role "system")'
        head = self.head
        if self.system_head is not None and self.system_head != self.head:
            head = f"{{{{ if {first_is_system} }}}}{self.system_head}{{{{ else }}}}{self.head}{{{{ end }}}}"
        system = "{{ .Content }}" + self.system_end if self.system_head is not None else ""
        (up, us), (ap, as_) = self.user, self.assistant
        return (
            head + '{{ range .Messages }}{{ if eq .Role "system" }}' + system
            + '{{ else }}{{ if eq .Role "assistant" }}' + ap + "{{ .Content }}" + as_
            + "{{ else }}" + up + "{{ .Content }}" + us + "{{ end }}{{ end }}{{ end }}" + self.generation
        )  # fmt: skip


def _specials(tok) -> list[str]:
    out = set(getattr(tok, "all_special_tokens", None) or [])
    for t in (getattr(tok, "added_tokens_decoder", None) or {}).values():
        out.add(getattr(t, "content", str(t)))
    return [t for t in out if t]


def _common_prefix(a: str, b: str, specials: list[str]) -> str:
    """The longest common prefix of `a` and `b`, not ending inside a special token of either."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    moved = True
    while moved:
        moved = False
        for text in (a, b):
            for sp in specials:
                i = text.find(sp)
                while i != -1 and i < k:
                    if i < k < i + len(sp):
                        k, moved = i, True
                    i = text.find(sp, i + 1)
    return a[:k]


def _split(text: str, *marks: str) -> list[str]:
    """`text` cut at each of `marks` in order: the len(marks) + 1 pieces between them."""
    out, pos = [], 0
    for m in marks:
        i = text.find(m, pos)
        if i < 0:
            raise TemplateError(f"the chat template drops or rewrites message text ({m!r} not in {text!r})")
        out.append(text[pos:i])
        pos = i + len(m)
    return out + [text[pos:]]


def parts_for(tok) -> Parts:
    """Recover the text around each role from the tokenizer's own chat template."""
    S, U1, A1, U2 = "SYSTEM-7f3a1c", "USER-ONE-7f3a1c", "ASSISTANT-7f3a1c", "USER-TWO-7f3a1c"  # message texts
    specials = _specials(tok)

    def render(conv, gen=True):
        msgs = [{"role": r, "content": c} for r, c in conv]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    try:
        one_gen = _split(render([("user", U1)]), U1)
        one_end = _split(render([("user", U1)], gen=False), U1)
        three = _split(render([("user", U1), ("assistant", A1), ("user", U2)]), U1, A1, U2)
        answered = _split(render([("user", U1), ("assistant", A1)], gen=False), U1, A1)
    except TemplateError:
        raise
    except Exception as exc:  # a template's raise_exception, or a tokenizer without one
        raise TemplateError(f"the chat template cannot render a plain conversation: {exc}") from None
    user_end = _common_prefix(one_gen[1], one_end[1], specials)
    assistant_end = _common_prefix(answered[2], three[2], specials)
    user_start = three[2][len(assistant_end) :]
    if not three[1].startswith(user_end) or not three[0].endswith(user_start) or not user_start:
        raise TemplateError("the chat template writes user turns differently depending on their place")
    parts = Parts(
        head=three[0][: len(three[0]) - len(user_start)],
        user=(user_start, user_end),
        assistant=(three[1][len(user_end) :], assistant_end),
        generation=one_gen[1][len(user_end) :],
    )
    try:
        with_system = _split(render([("system", S), ("user", U1)]), S, U1)
        if with_system[1].endswith(user_start):
            parts.system_head = with_system[0]
            parts.system_end = with_system[1][: len(with_system[1]) - len(user_start)]
    except Exception:  # no system role (Gemma raises), or folded into a user turn (Mistral)
        pass
    return parts


def template_for(tok) -> tuple[str, str]:
    """The Ollama TEMPLATE for this tokenizer's chat template, checked on :data:`PROBES`,
    and a note ('' when the template reproduces every probe)."""
    return _checked(tok, parts_for(tok))


GoRender = Callable[[str, list[dict[str, str]], str], str]


@functools.cache
def go_renderer() -> tuple[GoRender | None, str]:
    """(render, what it is): Go's text/template as Ollama runs a TEMPLATE, built once from
    :data:`GO_SOURCE` into the cache (offline: the standard library only); (None, why) without Go."""
    from tunewiz.core.bookkeeping.runs import cache_dir

    go = shutil.which("go")
    if go is None:
        return None, "Go is not installed"
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    try:
        version = subprocess.run(
            [go, "env", "GOVERSION"], env=env, capture_output=True, text=True, timeout=60
        ).stdout.strip()
        source = b"".join((GO_SOURCE / name).read_bytes() for name in ("go.mod", "main.go"))
        exe = cache_dir() / f"gotemplate-{hashlib.sha256(source + version.encode()).hexdigest()[:12]}"
        if not exe.is_file():
            exe.parent.mkdir(parents=True, exist_ok=True)
            tmp = exe.with_name(f"{exe.name}.{os.getpid()}.tmp")
            built = subprocess.run(
                [go, "build", "-o", str(tmp), "."], cwd=GO_SOURCE, env=env, capture_output=True, text=True, timeout=900
            )
            if built.returncode != 0:
                return None, f"Go could not build its checker ({built.stderr.strip()[-300:]})"
            tmp.replace(exe)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"Go could not build its checker ({exc})"

    def render(template: str, conv: list[dict[str, str]], system: str = "") -> str:
        doc = json.dumps({"template": template, "system": system, "messages": conv})
        out = subprocess.run([str(exe)], input=doc, capture_output=True, text=True, encoding="utf-8", timeout=60)
        if out.returncode != 0:
            raise TemplateError(f"Go's text/template cannot run the Ollama template: {out.stderr.strip()}")
        return out.stdout

    return render, f"Go's text/template ({version or 'go'}), as Ollama runs it"


def template_checker() -> str:
    """What checks a Modelfile's TEMPLATE on this machine, in words (the export records it)."""
    render, what = go_renderer()
    if render is not None:
        return what
    return f"tunewiz's renderer of Go's template subset ({what}: install Go to check with Go itself)"


def _checked(tok, parts: Parts) -> tuple[str, str]:
    template = parts.go_template()
    go, _ = go_renderer()
    note = ""
    probes = PROBES
    if parts.system_head is None:
        probes = [c for c in PROBES if all(m["role"] != "system" for m in c)]
        note = (
            "the model's chat template has no system turn of its own (it refuses or folds system messages), "
            "so this Modelfile leaves system messages out"
        )
    for conv in probes:
        want = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        default = parts.default_system()
        for system in ("", default) if default else ("",):  # without and with the Modelfile's SYSTEM
            got = render_conversation(template, conv, system)
            if got != want:
                raise TemplateError(f"the Ollama template renders {got!r} where the chat template renders {want!r}")
            if go is not None and (by_go := go(template, conv, system)) != want:
                raise TemplateError(
                    f"Go's text/template renders the Ollama template as {by_go!r} where the chat template "
                    f"renders {want!r}"
                )
    return template, note


def modelfile_parts(tok) -> tuple[str, str, str]:
    """(TEMPLATE, SYSTEM, note) for this tokenizer's chat template, checked on :data:`PROBES`:
    SYSTEM is the template's default system prompt ('' when it has none)."""
    parts = parts_for(tok)
    template, note = _checked(tok, parts)
    return template, parts.default_system(), note


def stop_tokens(tok, eos_ids: list[int]) -> list[str]:
    """The end-of-turn token(s) as text, for PARAMETER stop."""
    out: list[str] = []
    for i in eos_ids:
        t = tok.convert_ids_to_tokens(int(i))
        if t and t not in out:
            out.append(t)
    return out


def modelfile(gguf_name: str, template: str, stops: list[str], note: str = "", system: str = "") -> str:
    """A Modelfile: `ollama create NAME -f Modelfile` in its directory, then `ollama run NAME`.

    SYSTEM (when the chat template has a default system prompt) is what Ollama sends as the system
    message of a conversation that has none; the TEMPLATE writes the same text without it.
    """
    if '"""' in template or '"""' in system:
        raise TemplateError('the template contains """, which a Modelfile cannot quote')
    lines = [f"# {line}" for line in note.splitlines()]
    lines += [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {quote(s)}" for s in stops]
    return "\n".join(lines) + "\n"


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_modelfile(text: str) -> dict[str, Any]:
    """FROM, TEMPLATE, SYSTEM and the stop parameters of a Modelfile we wrote (for tests and `show`)."""
    out: dict[str, Any] = {"stop": [], "system": ""}
    for key in ("template", "system"):
        m = re.search(rf'^{key.upper()} """(.*?)"""', text, re.S | re.M)
        if m:
            out[key] = m.group(1)
    for line in text.splitlines():
        if line.startswith("FROM "):
            out["from"] = line[5:].strip()
        elif line.startswith("PARAMETER stop "):
            out["stop"].append(line[len("PARAMETER stop ") :].strip().strip('"').replace('\\"', '"'))
    return out


# -- a renderer for the Go text/template subset the templates above use --------------------------
#
# Text, {{ .Field }}, {{ if PIPE }} .. {{ else }} .. {{ end }}, {{ range PIPE }} .. {{ end }},
# whitespace trimming with {{- and -}}, and the functions eq, ne, and, or, not, len, index.

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|-?\d+|\$?(?:\.\w+)+|\$|\.|\w+)')


@dataclass
class _Node:
    kind: str  # text | print | if | range
    value: Any = None
    body: list | None = None
    other: list | None = None


def _lex(template: str) -> list[tuple[str, str]]:
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if parts and parts[-1][0] == "trim":
            parts.pop()
            text = text.lstrip()
        parts.append(("text", text))
        parts.append(("action", m.group(2)))
        if m.group(3):
            parts.append(("trim", ""))
        pos = m.end()
    tail = template[pos:]
    if parts and parts[-1][0] == "trim":
        parts.pop()
        tail = tail.lstrip()
    parts.append(("text", tail))
    return parts


def _parse(parts: list[tuple[str, str]], i: int = 0) -> tuple[list[_Node], int, str]:
    nodes: list[_Node] = []
    while i < len(parts):
        kind, s = parts[i]
        i += 1
        if kind == "text":
            if s:
                nodes.append(_Node("text", s))
            continue
        word = s.split(None, 1)[0] if s else ""
        if word in ("end", "else"):
            return nodes, i, word
        if word in ("if", "range"):
            body, i, closer = _parse(parts, i)
            other = None
            if closer == "else":
                other, i, closer = _parse(parts, i)
            if closer != "end":
                raise TemplateError(f"{{{{ {s} }}}} has no {{{{ end }}}}")
            nodes.append(_Node(word, s[len(word) :].strip(), body, other))
        else:
            nodes.append(_Node("print", s))
    return nodes, i, ""


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or not m.group(1):
            if expr[pos:].strip():
                raise TemplateError(f"cannot read {expr[pos:]!r}")
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def _truth(v: Any) -> bool:
    return v is not None and v is not False and v != 0 and v != "" and v != [] and v != {}


def _field(v: Any, path: str) -> Any:
    for name in [p for p in path.split(".") if p]:
        v = v.get(name) if isinstance(v, dict) else getattr(v, name, None)
    return v


_FUNCS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a),
    "index": lambda a, i: a[i],
}


def _eval(tokens: list[str], dot: Any, root: Any) -> Any:
    """Evaluate one command (`fn arg...` or a single operand) from `tokens`, consumed in place."""

    def operand() -> Any:
        t = tokens.pop(0)
        if t == "(":
            v = command(stop=")")
            tokens.pop(0)
            if tokens and tokens[0].startswith(".") and tokens[0] != ".":
                v = _field(v, tokens.pop(0))
            return v
        if t.startswith('"'):
            return bytes(t[1:-1], "utf-8").decode("unicode_escape")
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t == ".":
            return dot
        if t.startswith("$"):
            return _field(root, t[1:])
        if t.startswith("."):
            return _field(dot, t)
        raise TemplateError(f"unexpected {t!r}")

    def command(stop: str | None = None) -> Any:
        head = tokens[0]
        if head in ("and", "or"):
            tokens.pop(0)
            result: Any = None
            decided = False
            while tokens and tokens[0] != stop:
                if decided:  # Go short-circuits: the rest is not evaluated (index on an empty list)
                    _skip_operand(tokens)
                    continue
                result = operand()
                if (head == "and") != _truth(result):
                    decided = True
            return result
        if head in _FUNCS:
            tokens.pop(0)
            args = []
            while tokens and tokens[0] != stop:
                args.append(operand())
            return _FUNCS[head](*args)
        return operand()

    return command()


def _skip_operand(tokens: list[str]) -> None:
    t = tokens.pop(0)
    if t == "(":
        depth = 1
        while depth:
            t = tokens.pop(0)
            depth += (t == "(") - (t == ")")
        if tokens and tokens[0].startswith(".") and tokens[0] != ".":
            tokens.pop(0)


def _run(nodes: list[_Node], dot: Any, root: Any, out: list[str]) -> None:
    for n in nodes:
        if n.kind == "text":
            out.append(n.value)
        elif n.kind == "print":
            v = _eval(_tokens(n.value), dot, root)
            out.append("" if v is None else str(v))
        elif n.kind == "if":
            branch = n.body if _truth(_eval(_tokens(n.value), dot, root)) else n.other
            _run(branch or [], dot, root, out)
        elif n.kind == "range":
            items = _eval(_tokens(n.value), dot, root) or []
            if items:
                for item in items:
                    _run(n.body or [], item, root, out)
            else:
                _run(n.other or [], dot, root, out)


def render_conversation(template: str, conv: list[dict[str, str]], system: str = "") -> str:
    """The prompt Ollama builds from `template` for chat messages (role/content dicts), with the
    Modelfile's SYSTEM `system` put first when the conversation does not start with a system message."""
    if system and (not conv or conv[0]["role"] != "system"):
        conv = [{"role": "system", "content": system}, *conv]
    return render(template, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in conv]})


def render(template: str, data: dict[str, Any]) -> str:
    """Render a Go template (the subset above) with `data` as both `.` and `$`.

    >>> render('{{- range .Messages }}[{{ .Role }}] {{ .Content }};{{ end }}', {"Messages": [{"Role": "user"}]})
    '[user] ;'
    >>> render('{{ if not (and .Messages (eq (index .Messages 0).Role "system")) }}default{{ end }}', {"Messages": []})
    'default'
    """
    nodes, _, closer = _parse(_lex(template))
    if closer:
        raise TemplateError(f"unexpected {{{{ {closer} }}}}")
    out: list[str] = []
    _run(nodes, data, data, out)
    return "".join(out)
