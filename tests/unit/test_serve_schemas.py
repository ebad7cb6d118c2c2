"""Request bodies: strict types, unknown fields refused, error paths that name the field."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from serve.schemas import ApiError, ChatCompletionRequest, CompletionRequest, EvaluateRequest, field_path


def _errors(model, body) -> list[tuple]:
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    return [tuple(e["loc"]) for e in err.value.errors()]


def test_valid_completion_keeps_defaults():
    body = CompletionRequest.model_validate({"model": "ft", "prompt": ["a", "b"]})
    assert body.prompts() == ["a", "b"]
    assert (body.max_tokens, body.temperature, body.top_p, body.stop_strings()) == (None, 1.0, 1.0, ())
    assert CompletionRequest.model_validate({"model": "ft", "prompt": "a", "stop": "\n"}).stop_strings() == ("\n",)


@pytest.mark.parametrize("body,field", [
    ({"model": "ft", "prompt": "a", "max_tokens": "8"}, "max_tokens"),  # strict: no string -> int
    ({"model": "ft", "prompt": "a", "max_tokens": 1.5}, "max_tokens"),
    ({"model": "ft", "prompt": "a", "temperature": 3}, "temperature"),
    ({"model": "ft", "prompt": "a", "top_p": 0}, "top_p"),
    ({"model": "ft", "prompt": "a", "logprobs": 2}, "logprobs"),
    ({"model": " ", "prompt": "a"}, "model"),
    ({"prompt": "a"}, "model"),
])
def test_bad_completion_fields(body, field):
    locs = _errors(CompletionRequest, body)
    assert field_path(("body", *locs[0]), unknown_field=field == "logprobs") == field


def test_stop_strings_are_capped():
    body = CompletionRequest.model_validate({"model": "ft", "prompt": "a", "stop": list("abcde")})
    with pytest.raises(ApiError) as err:
        body.stop_strings()
    assert (err.value.status, err.value.param) == (400, "stop")


def test_nested_paths_name_list_positions():
    locs = _errors(EvaluateRequest, {"condition": "base", "items": [
        {"prompt": "p", "choices": ["a", "b"]}, {"prompt": "p", "choices": ["a", " "]}]})
    assert field_path(("body", *locs[0])) == "items[1].choices[1]"
    locs = _errors(ChatCompletionRequest, {"model": "ft", "messages": [{"role": "user", "content": 3}]})
    assert field_path(("body", *locs[0])) == "messages[0].content"


def test_field_path_drops_union_branch_names_and_keeps_unknown_fields():
    assert field_path(("body", "prompt", "list[function-after[_not_blank(), str]]", 2)) == "prompt[2]"
    assert field_path(("body", "prompt", "str")) == "prompt"
    assert field_path(("body", 14)) == "body"
    assert field_path(("body", "items", 0, "weight"), unknown_field=True) == "items[0].weight"


def test_api_error_survives_pickling_with_its_fields():
    err = pickle.loads(pickle.dumps(ApiError(404, "model", "'x' is not served")))
    assert (err.status, err.param, err.message) == (404, "model", "'x' is not served")
    assert err.body()["error"] == {"message": "model: 'x' is not served", "type": "not_found", "param": "model", "code": None}
