"""Structured answers: ask for JSON, parse it out of whatever the model wrapped it in, validate it against a
pydantic model, and re-ask with the validation error as feedback, up to `max_retries` times.

Small models need help to stay on the rails: with `prefill_json` the answer is started for them with the object's
opening and first key (`{"names": ["`), and an object they fail to close (`{"names": ["A", "B"], {"x"...`) is
salvaged by closing it after its last complete top-level value. Either way pydantic has the last word.

An answer that never validates is not dropped silently: it becomes an `LlmOutputError` holding the reason and
every answer the model gave, for the caller to record as the failure of that unit of work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.models.llm import Llm
from pipeline.models.llm.base import Message, Prompt, SamplingParams, as_messages, text_part

Schema = TypeVar("Schema", bound=BaseModel)

FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class LlmOutputError(ValueError):
    """No valid JSON answer after every retry; `reason` says what was wrong with the last one."""

    def __init__(self, reason: str, answers: list[str]) -> None:
        last = answers[-1][:200] if answers else ""
        super().__init__(f"{reason} (after {len(answers)} attempts; last answer: {last!r})")
        self.reason = reason
        self.answers = answers


def json_instruction(schema: type[BaseModel]) -> str:
    """The object's shape with `...` for the values, and a line per field on what goes there. Not the JSON schema
    itself, and no example values: small models copy either back verbatim."""
    spec = schema.model_json_schema()
    defs = spec.get("$defs", {})
    notes = [f"- {name}: {note}" for name, node in spec.get("properties", {}).items() if (note := _note(node, defs))]
    lines = ["Answer with only a JSON object of this form, no other text:", _shape(spec, defs)]
    return "\n".join(lines + (["where", *notes] if notes else []))


def _resolve(node: dict, defs: dict) -> dict:
    if "$ref" in node:
        return _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    options = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    return _resolve(options[0], defs) if options else node


def _shape(node: dict, defs: dict) -> str:
    node = _resolve(node, defs)
    kind = node.get("type")
    if kind == "object":
        fields = (f"{json.dumps(name)}: {_shape(child, defs)}" for name, child in node.get("properties", {}).items())
        return "{" + ", ".join(fields) + "}"
    if kind == "array":
        return f"[{_shape(node.get('items', {}), defs)}]"
    return '"..."' if kind == "string" else "..."


def _note(node: dict, defs: dict) -> str:
    node = _resolve(node, defs)
    kind = node.get("type")
    parts = [node["description"]] if "description" in node else []
    if "enum" in node:
        parts.append("one of " + ", ".join(json.dumps(value) for value in node["enum"]))
    elif kind in ("integer", "number", "boolean"):
        parts.append({"integer": "an integer", "number": "a number", "boolean": "true or false"}[kind])
    if "minimum" in node or "maximum" in node:
        parts.append(f"from {node.get('minimum', '-inf')} to {node.get('maximum', 'inf')}")
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} item{'' if node['minItems'] == 1 else 's'}")
    return ", ".join(parts)


def json_prefix(schema: type[BaseModel]) -> str:
    """The opening of the object up to its first value, in the tokens a model would write it with:
    `{"names": ["` for a list of strings, `{"relevance": ` for a number, no opening for a value that may be null;
    `{` for a schema without fields."""
    spec = schema.model_json_schema()
    defs = spec.get("$defs", {})
    properties = spec.get("properties", {})
    if not properties:
        return "{"
    name, node = next(iter(properties.items()))
    kind = _resolve(node, defs).get("type")
    opening = "" if _nullable(node) else {"string": '"', "array": "["}.get(kind, "")
    if opening == "[" and _resolve(_resolve(node, defs).get("items", {}), defs).get("type") == "string":
        opening = '["'
    return f"{{{json.dumps(name)}: {opening}"


def _nullable(node: dict) -> bool:
    return node.get("type") == "null" or any(option.get("type") == "null" for option in node.get("anyOf", []))


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


def salvage_object(text: str, start: int) -> Any | None:
    """The longest prefix of the object opening at `start` that closes as JSON when cut after a complete top-level
    value: `{"names": ["A", "B"], {"x"...` gives `{"names": ["A", "B"]}`. None when not even one member is whole."""
    salvaged, position = None, start + 1
    members: list[tuple[str, Any]] = []
    while True:
        try:
            position = _SPACE.match(text, position).end()
            key, position = _DECODER.raw_decode(text, position)
            position = _SPACE.match(text, position).end()
            if not isinstance(key, str) or text[position : position + 1] != ":":
                return salvaged
            value, position = _DECODER.raw_decode(text, _SPACE.match(text, position + 1).end())
        except json.JSONDecodeError:
            return salvaged
        members.append((key, value))
        salvaged = dict(members)
        position = _SPACE.match(text, position).end()
        if text[position : position + 1] != ",":
            return salvaged
        position += 1


def json_candidates(text: str) -> Iterator[Any]:
    """Every JSON value in an answer, in order: those inside code fences first, then any starting with { or [; an
    object that does not close is offered as its salvaged prefix, where it has one."""
    fenced = [match.group(1) for match in FENCE.finditer(text)]
    for body in [*fenced, text]:
        for start in (match.start() for match in re.finditer(r"[{\[]", body)):
            try:
                yield _DECODER.raw_decode(body, start)[0]
            except json.JSONDecodeError:
                if body[start] == "{" and (salvaged := salvage_object(body, start)) is not None:
                    yield salvaged


def parse_answer(text: str, schema: type[Schema]) -> Schema:
    """The first JSON value in the answer that validates; else the first one's validation error."""
    first_error: ValidationError | None = None
    for candidate in json_candidates(text):
        try:
            return schema.model_validate(candidate)
        except ValidationError as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error
    raise ValueError("the answer holds no JSON object")


def _reason(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'the object'}: {item['msg']}" for item in error.errors()
        )
    return str(error)


def complete_json_batch(
    llm: Llm,
    prompts: list[Prompt],
    schema: type[Schema],
    max_retries: int | None = None,
    params: SamplingParams | None = None,
) -> list[Schema | LlmOutputError]:
    """One validated object per prompt, or the `LlmOutputError` saying why there is none; retries are batched.

    Without `params`, the model's own with max_new_tokens capped at `llm.json_max_new_tokens`.
    """
    if params is None and llm.json_max_new_tokens is not None:
        params = replace(llm.params, max_new_tokens=min(llm.params.max_new_tokens, llm.json_max_new_tokens))
    instruction = json_instruction(schema)
    prefill = [{"role": "assistant", "content": json_prefix(schema)}] if llm.prefill_json else []
    prefix = prefill[0]["content"] if prefill else ""
    conversations: list[list[Message]] = []
    for prompt in prompts:
        messages = as_messages(prompt)
        last = messages[-1]
        content = last["content"]  # a string, or content parts (images for a VLM): the instruction is a text part
        asked = (
            f"{content}\n\n{instruction}" if isinstance(content, str) else [*content, text_part(f"\n\n{instruction}")]
        )
        conversations.append([*messages[:-1], {**last, "content": asked}])
    results: list[Schema | None] = [None] * len(prompts)
    answers: list[list[str]] = [[] for _ in prompts]
    reasons = [""] * len(prompts)
    pending = list(range(len(prompts)))
    for _ in range((llm.max_retries if max_retries is None else max_retries) + 1):
        completions = llm.complete_batch([conversations[i] + prefill for i in pending], params)
        still_pending = []
        for index, completion in zip(pending, completions, strict=True):
            text = prefix + completion.text
            answers[index].append(text)
            try:
                results[index] = parse_answer(text, schema)
            except ValueError as error:
                reasons[index] = _reason(error)
                if completion.finish_reason == "length":
                    reasons[index] += " (the answer was cut at max_new_tokens)"
                if answers[index][-2:-1] == [text]:
                    continue  # the feedback changed nothing: a greedy model would only say it again
                conversations[index] = [
                    *conversations[index],
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That answer is not valid: {reasons[index]}.\n\n{instruction}"},
                ]
                still_pending.append(index)
        pending = still_pending
        if not pending:
            break
    return [
        LlmOutputError(reason, given) if result is None else result
        for result, reason, given in zip(results, reasons, answers, strict=True)
    ]


def complete_json(
    llm: Llm,
    prompt: Prompt,
    schema: type[Schema],
    max_retries: int | None = None,
    params: SamplingParams | None = None,
) -> Schema:
    """A validated object, or raises `LlmOutputError` with the reason and every answer given."""
    result = complete_json_batch(llm, [prompt], schema, max_retries, params)[0]
    if isinstance(result, LlmOutputError):
        raise result
    return result
