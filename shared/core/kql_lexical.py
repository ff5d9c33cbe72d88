"""KQL text as Kusto's lexer sees it, as far as the relay needs: where the comments and string literals are.

    non_code_spans(text) -> [(start, end), ...]   every `//` comment, "..." and '...' literal (with \\ escapes),
                                                  @"..." / @'...' verbatim literal (quotes doubled) and ```...```
                                                  multi-line literal, in order; UnterminatedLiteral otherwise
    code_only(text) -> str                        the text with each of them blanked out (same length), so that a
                                                  search for operators never matches inside a string or comment

Templates use it to keep placeholders out of literals (shared.core.templates); split hunts to find the operators a
query runs at its top level (shared.core.splitting).
"""

from __future__ import annotations

LINE_BREAKS = "\r\n\u2028\u2029"  # where Kusto's lexer ends a line (and an unterminated literal)


class UnterminatedLiteral(ValueError):
    """A string literal that does not end before the line (or the ``` literal before the text) does."""


def non_code_spans(body: str) -> list[tuple[int, int]]:
    """(start, end) of every comment and string literal in KQL text, by Kusto's lexical rules."""
    spans = []
    index = 0
    while index < len(body):
        if body.startswith("//", index):
            end = next((i for i in range(index, len(body)) if body[i] in LINE_BREAKS), len(body))
        elif body.startswith("```", index):
            close = body.find("```", index + 3)
            if close < 0:
                raise UnterminatedLiteral("unterminated ``` literal")
            end = close + 3
        elif body[index] in "'\"":
            end = _quoted_end(body, index, verbatim=body[index - 1:index] == "@")
        else:
            index += 1
            continue
        spans.append((index, end))
        index = end
    return spans


def code_only(body: str) -> str:
    """The text with every comment and string literal replaced by spaces (offsets are kept)."""
    chars = list(body)
    for start, end in non_code_spans(body):
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _quoted_end(body: str, start: int, verbatim: bool) -> int:
    quote, index = body[start], start + 1
    while index < len(body) and body[index] not in LINE_BREAKS:
        if body[index] == quote:
            if verbatim and body[index + 1:index + 2] == quote:
                index += 2
                continue
            return index + 1
        if body[index] == "\\" and not verbatim:
            index += 1  # the escaped character, which a line break cannot be
            if body[index:index + 1] in ("", *LINE_BREAKS):
                break
        index += 1
    raise UnterminatedLiteral(f"unterminated string literal starting {body[start:start + 30]!r}")
