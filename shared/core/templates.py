"""KQL templates: `.kql` files that declare typed parameters, rendered with validated literals.

A template is a file `<name>.kql` in the templates folder (setting `HUNT_TEMPLATES_DIR`, default the
repository's `templates/`, shipped with the app). Its name is the file stem (`[a-z0-9][a-z0-9_-]*`). The file
opens with a header of `//` comment lines; directives in it declare the template:

    // @description Logons of one account on devices.
    // @param account: string
    // @param lookback: timespan = 7d
    // @param hashes: list<sha256>

A default follows `=` and is read as JSON when it parses as JSON (`= 1000`, `= true`, `= ["a"]`), otherwise as
the bare text (`= 7d`); it is validated at load like any value. The rest of the file is the query body, where
`{{name}}` marks where a parameter's literal goes. `{{` is not valid KQL outside a string or comment, so the
syntax cannot collide with the language; to keep a literal from ever landing inside another one, load refuses a
placeholder inside a string literal or comment, right after `@` or a name character (`@{{x}}` would turn the
value into a verbatim literal), or right before a name character, and refuses any other `{{` in the code.
Every placeholder must be declared and every declared parameter used. Values become literals through
`shared.core.kql_literals` (see its docstring for each type); nothing else from a message reaches the query text.

Errors (roots in `shared.core.errors`):

    HuntRelayError
    ├── TemplateDefinitionError   a template file is malformed: a deployment bug, raised by load_templates
    └── InvalidHuntRequest        the caller's fault, terminal for that message
        ├── UnknownTemplate           field "template": names a template that is not shipped (lists them)
        └── TemplateParameterError    field "parameters.<name>": missing, unknown or ill-typed
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.core.errors import KqlValueError, TemplateDefinitionError, TemplateParameterError, UnknownTemplate
from shared.core.kql_lexical import UnterminatedLiteral, non_code_spans
from shared.core.kql_literals import ParamType, parse_type, render_literal

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
MAX_TEMPLATE_BYTES = 64 * 1024
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PARAM_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_PLACEHOLDER = re.compile(r"\{\{(" + _PARAM_NAME + r")\}\}")
_DIRECTIVE = re.compile(r"//\s*@(\w+)\b\s*(.*)")
_PARAM_DECL = re.compile("(" + _PARAM_NAME + r")\s*:\s*([^=]+?)\s*(?:=\s*(.*))?")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: ParamType
    default_literal: str | None  # the default, already validated and rendered; None when required


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    parameters: tuple[Parameter, ...]
    parts: tuple[str, ...]  # the body split at placeholders: text, name, text, name, ..., text

    @property
    def body(self) -> str:
        return "".join("{{" + part + "}}" if i % 2 else part for i, part in enumerate(self.parts))


def load_templates(folder: Path) -> dict[str, Template]:
    """Every `*.kql` file in `folder`, parsed and validated; the first bad file raises TemplateDefinitionError."""
    if not folder.is_dir():
        raise TemplateDefinitionError(f"templates folder {str(folder)!r} does not exist")
    templates = {}
    for path in sorted(folder.glob("*.kql")):
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise TemplateDefinitionError(f"{path.name}: larger than {MAX_TEMPLATE_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8-sig")  # editors on Windows may add a BOM
        except UnicodeDecodeError as error:
            raise TemplateDefinitionError(f"{path.name}: not UTF-8 ({error.reason})") from None
        templates[path.stem] = parse_template(path.stem, text)
    return templates


def get_template(templates: Mapping[str, Template], name: object) -> Template:
    """The template called `name`; UnknownTemplate lists the available names."""
    if not isinstance(name, str) or name not in templates:
        raise UnknownTemplate(name if isinstance(name, str) else repr(name), sorted(templates))
    return templates[name]


def render(template: Template, params: Mapping[str, object]) -> str:
    """The template's query with each parameter's validated literal in place; defaults apply."""
    if not isinstance(params, Mapping) or not all(isinstance(key, str) for key in params):
        raise TemplateParameterError("", "expected a JSON object of parameter names to values")
    declared = {parameter.name: parameter for parameter in template.parameters}
    unknown = sorted(key for key in params if key not in declared)
    if unknown:
        shown = ", ".join(repr(key[:64]) for key in unknown[:5])
        raise TemplateParameterError(unknown[0][:64], f"not a parameter of template {template.name!r} "
                                     f"(unknown: {shown}); it takes: {', '.join(declared) or 'nothing'}")
    literals = {}
    for name, parameter in declared.items():
        if name in params:
            try:
                literals[name] = render_literal(parameter.type, params[name], name)
            except KqlValueError as error:
                raise TemplateParameterError(error.parameter, f"not a valid {error.type_name}: {error.reason}") \
                    from None
        elif parameter.default_literal is not None:
            literals[name] = parameter.default_literal
        else:
            raise TemplateParameterError(name, f"required by template {template.name!r} ({parameter.type})")
    return "".join(literals[part] if i % 2 else part for i, part in enumerate(template.parts))


def parse_template(name: str, text: str) -> Template:
    """Parse and validate one template's text (what load_templates does for each file)."""
    if not _TEMPLATE_NAME.fullmatch(name):
        raise TemplateDefinitionError(f"{name[:80]!r}: a template name is 1-64 of a-z 0-9 _ - (file stem)")
    lines = text.splitlines(keepends=True)
    header_end = 0
    while header_end < len(lines) and (not lines[header_end].strip()
                                       or lines[header_end].lstrip().startswith("//")):
        header_end += 1
    description, parameters = _parse_header(name, [line.strip() for line in lines[:header_end]])
    body = "".join(lines[header_end:])
    if not body.strip():
        raise TemplateDefinitionError(f"{name}: the query body is empty")
    parts = _split_at_placeholders(name, body)
    used = set(parts[1::2])
    declared = [parameter.name for parameter in parameters]
    if undeclared := sorted(used - set(declared)):
        raise TemplateDefinitionError(f"{name}: placeholders without a @param: {', '.join(undeclared)}")
    if unused := [p for p in declared if p not in used]:
        raise TemplateDefinitionError(f"{name}: parameters declared but never used: {', '.join(unused)}")
    return Template(name, description, tuple(parameters), tuple(parts))


def _parse_header(name: str, lines: list[str]) -> tuple[str, list[Parameter]]:
    description: list[str] = []
    parameters: list[Parameter] = []
    for line in lines:
        directive = _DIRECTIVE.fullmatch(line)
        if not directive:
            continue
        keyword, rest = directive.groups()
        if keyword == "description":
            description.append(rest.strip())
        elif keyword == "param":
            parameters.append(_parse_param(name, rest.strip(), {p.name for p in parameters}))
        else:
            raise TemplateDefinitionError(f"{name}: unknown directive @{keyword} (use @param or @description)")
    return " ".join(description), parameters


def _parse_param(name: str, declaration: str, seen: set[str]) -> Parameter:
    match = _PARAM_DECL.fullmatch(declaration)
    if not match:
        raise TemplateDefinitionError(f"{name}: cannot read @param {declaration[:80]!r}; "
                                      "write `// @param name: type` or `// @param name: type = default`")
    param_name, type_spec, default_text = match.groups()
    if param_name in seen:
        raise TemplateDefinitionError(f"{name}: parameter {param_name} is declared twice")
    try:
        param_type = parse_type(type_spec)
    except ValueError as error:
        raise TemplateDefinitionError(f"{name}: parameter {param_name}: {error}") from None
    default_literal = None
    if default_text is not None:
        try:
            default: object = json.loads(default_text)
        except ValueError:
            default = default_text.strip()
        try:
            default_literal = render_literal(param_type, default, param_name)
        except KqlValueError as error:
            raise TemplateDefinitionError(f"{name}: the default is invalid: {error}") from None
    return Parameter(param_name, param_type, default_literal)


def _split_at_placeholders(name: str, body: str) -> list[str]:
    non_code = _non_code_spans(name, body)
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(body):
        start, end = match.span()
        if any(s < end and start < e for s, e in non_code):
            raise TemplateDefinitionError(f"{name}: placeholder {match.group()} is inside a string or comment")
        before, after = body[start - 1:start], body[end:end + 1]
        if (before and (before.isalnum() or before in "_@$")) or (after and (after.isalnum() or after == "_")):
            raise TemplateDefinitionError(f"{name}: placeholder {match.group()} touches a name or '@'; "
                                          "put a space or an operator around it")
        parts += [body[position:start], match.group(1)]
        position = end
    parts.append(body[position:])
    code_only = "".join(parts[::2])  # the body without its placeholders
    stray = [m.start() for m in re.finditer(r"\{\{", code_only)]
    if any(not any(s <= at < e for s, e in _non_code_spans(name, code_only)) for at in stray):
        raise TemplateDefinitionError(f"{name}: '{{{{' outside a string or comment that is not a placeholder "
                                      "{{name}}")
    return parts


def _non_code_spans(name: str, body: str) -> list[tuple[int, int]]:
    try:
        return non_code_spans(body)
    except UnterminatedLiteral as error:
        raise TemplateDefinitionError(f"{name}: {error}") from None
