"""Hostile documents through the real handler over the real stack (Azurite, the sandbox): huge integers in every
field, numbers that overflow to infinity, NaN and Infinity literals, lone surrogates in keys and values, ids with
every control character, deep nesting and duplicate keys. Each message ends with exactly one answer, a delivered
result or one dead-letter record, and never a raise; the poison handler answers any bytes at all the same way.

The documents are written as text by `render` below (Python's own writer cannot write most of them), from trees
whose leaves may be raw literals.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.dead_letters import safe_key
from shared.app.relay import Relay
from tests.document_audit import is_strict
from tests.relay.conftest import RelayStack


@dataclass(frozen=True)
class Literal:
    """A token written as is: a number Python would not write, or NaN."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """An object as a list of pairs, so that a key may come twice."""

    items: tuple[tuple[str, Any], ...]


def render(value: Any) -> str:
    if isinstance(value, Literal):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value.items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)   # ensure_ascii: a lone surrogate is written as its escape, plain ASCII JSON text


CONTROL = [chr(c) for c in [*range(0, 32), 127, 0x85, 0x2028, 0x2029]]
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
hostile_numbers = st.sampled_from([
    Literal("9" * 5000), Literal("-" + "1" * 4400), Literal("1e400"), Literal("-1e400"),
    Literal("1.7976931348623157e309"), Literal("NaN"), Literal("Infinity"), Literal("-Infinity"),
])
hostile_strings = st.one_of(
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), SURROGATES, st.text(max_size=5)),
    st.builds(lambda a, c, b: a + c + b, st.sampled_from(["job", "", "x-1"]), st.sampled_from(CONTROL),
              st.sampled_from(["", "1", "job"])),
)
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | \
    st.text(max_size=20) | hostile_numbers | hostile_strings
keys = st.text(max_size=8) | hostile_strings
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.lists(st.tuples(keys, inner), max_size=4).map(
        lambda items: Pairs(tuple(items))),
    max_leaves=12,
)
FIELDS = ["query", "id", "api", "timespan", "destination", "format", "context", "template", "parameters",
          "attempt", "first_enqueued_at", "version", "last_error", "pending_delivery", "relay_mark"]
GOOD = {"query": "DeviceInfo | take 1", "api": "mde", "format": "json"}


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A hunt whose fields are each good, hostile or missing; sometimes a field twice, sometimes deep."""
    items: list[tuple[str, Any]] = []
    for name in FIELDS:
        choice = draw(st.sampled_from(["good", "hostile", "missing", "missing"]))
        if choice == "good" and name in GOOD:
            items.append((name, GOOD[name]))
        elif choice == "hostile":
            items.append((name, draw(trees)))
    if draw(st.booleans()):
        items.append(("query", "DeviceInfo"))   # possibly twice
    text = render(Pairs(tuple(items)))
    depth = draw(st.sampled_from([0, 0, 0, 31, 33, 2000]))
    if depth:
        text = text[:-1] + (',"context":' if items else '"context":') + '{"a":[' * depth + "1" + "]}" * depth + "}"
    return text


_unique = itertools.count()


def fresh_ids(text: str) -> str:
    """Every example its own job id: a valid id a generator repeats would make two examples share a record."""
    return text.replace('"id":"', f'"id":"u{next(_unique)}-').replace('"id": "', f'"id": "u{next(_unique)}-')


def records_for(relay_stack: RelayStack, relay: Relay, key: str) -> list[dict[str, Any]]:
    """The dead-letter records under one key (the job id, or the message id when the message names none)."""
    container = relay_stack.blob_service().get_container_client(relay_stack.deadletter_container)
    prefix = f"{relay.clock():%Y/%m/%d}/{safe_key(key)}."
    return [json.loads(container.download_blob(b.name).readall())
            for b in container.list_blobs(name_starts_with=prefix)]


@pytest.fixture
def relay(relay_stack: RelayStack) -> Relay:
    return relay_stack.make()


def test_the_strategy_writes_the_documents_it_promises():
    assert render(Pairs((("a", Literal("NaN")), ("a", "\ud800")))) == '{"a":NaN,"a":"\\ud800"}'


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(document=documents(), as_base64=st.booleans())
def test_every_hostile_document_is_answered_once_and_never_raises(relay_stack: RelayStack, relay: Relay,
                                                                  document: str, as_base64: bool):
    text = fresh_ids(document)
    raw = base64.b64encode(text.encode("utf-8", "surrogatepass")) if as_base64 else text.encode("utf-8",
                                                                                               "surrogatepass")
    message_id = "m-" + uuid.uuid4().hex
    outcome = relay.handle(raw, message_id=message_id, dequeue_count=1)
    records = records_for(relay_stack, relay, outcome.job_id)
    if outcome.status == "delivered":
        assert records == []
        result = relay_stack.blob_service().get_blob_client(relay_stack.results_container, f"{outcome.job_id}.json")
        assert is_strict(result.download_blob().readall())
    else:
        assert outcome.status in ("rejected", "failed"), outcome
        assert [r["message_id"] for r in records] == [message_id]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(max_size=512), documents().map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_the_poison_handler_records_any_bytes_once_and_never_raises(relay_stack: RelayStack, relay: Relay,
                                                                    raw: bytes):
    message_id = "p-" + uuid.uuid4().hex
    raw = fresh_ids(raw.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    outcome = relay.handle_poison(raw, message_id=message_id, dequeue_count=6)
    assert outcome.status in ("rejected", "failed")
    [record] = records_for(relay_stack, relay, outcome.job_id)
    assert record["message_id"] == message_id
    kept = record["message"]
    assert (kept["text"].encode("utf-8") if "text" in kept else base64.b64decode(kept["base64"])) == raw
