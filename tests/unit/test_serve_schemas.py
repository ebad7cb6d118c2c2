"""Request bodies: strict types, error paths that name the field; the OpenAI bodies ignore unknown
fields (as OpenAI-compatible servers do), the evaluator's own bodies refuse them."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from serve.openai_schemas import ChatCompletionRequest, CompletionRequest
from serve.schemas import ApiError, EvaluateRequest, field_path


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
    ({"model": "ft", "prompt": "a", "logprobs": "2"}, "logprobs"),
    ({"model": "ft", "prompt": "a", "n": 0}, "n"),
    ({"model": "ft", "prompt": "a", "echo": "yes"}, "echo"),
    ({"model": "ft", "prompt": [1, -2]}, "prompt"),
    ({"model": " ", "prompt": "a"}, "model"),
    ({"prompt": "a"}, "model"),
])
def test_bad_completion_fields(body, field):
    locs = _errors(CompletionRequest, body)
    assert field_path(("body", *locs[0])) == field


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


def test_openai_bodies_ignore_unknown_fields_and_list_them():
    body = CompletionRequest.model_validate({"model": "ft", "prompt": "a", "frobnicate": 1, "metadata": {"k": "v"}})
    assert body.ignored_fields() == ["frobnicate", "metadata"]
    chat = ChatCompletionRequest.model_validate({"model": "ft", "messages": [{"role": "user", "content": "hi",
                                                                              "name": "ann"}], "store": False})
    assert chat.ignored_fields() == ["store", "messages[0].name"]
    with pytest.raises(ValidationError):  # the evaluator's own API still refuses a misspelt field
        EvaluateRequest.model_validate({"condition": "base", "items": [{"prompt": "p", "choices": ["a", "b"]}],
                                        "wrold": "w"})


@pytest.mark.parametrize("prompt,expected", [
    ("a", ["a"]), (["a", "b"], ["a", "b"]), ([5, 6], [(5, 6)]), ([[5], [6, 7]], [(5,), (6, 7)]),
])
def test_prompts_may_be_text_or_token_ids(prompt, expected):
    assert CompletionRequest.model_validate({"model": "ft", "prompt": prompt}).prompts() == expected


def test_chat_content_parts_developer_role_and_max_completion_tokens():
    chat = ChatCompletionRequest.model_validate({"model": "ft", "max_tokens": 5, "max_completion_tokens": 7, "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None}]})
    assert chat.template_messages() == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Hi\nthere"},
                                        {"role": "assistant", "content": ""}]
    assert chat.max_new_tokens() == 7


@pytest.mark.parametrize("body,field", [
    ({"model": "ft", "prompt": "a", "suffix": "z"}, "suffix"),
    ({"model": "ft", "prompt": "a", "best_of": 3, "n": 2}, "best_of"),
    ({"model": "ft", "prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"model": "ft", "prompt": "a", "logit_bias": {"1": 5.0}}, "logit_bias"),
    ({"model": "ft", "prompt": []}, "prompt"),
])
def test_values_we_cannot_honour_are_refused_by_name(body, field):
    with pytest.raises(ApiError) as err:
        CompletionRequest.model_validate(body).check()
    assert (err.value.status, err.value.param) == (400, field)
    CompletionRequest.model_validate({"model": "ft", "prompt": "a", "max_tokens": 0, "echo": True}).check()  # scoring


@pytest.mark.parametrize("extra,field", [
    ({"tools": [{"type": "function"}]}, "tools"), ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"top_logprobs": 2}, "top_logprobs"),
])
def test_chat_values_we_cannot_honour_are_refused_by_name(extra, field):
    with pytest.raises(ApiError) as err:
        ChatCompletionRequest.model_validate({"model": "ft", "messages": [{"role": "user", "content": "hi"}], **extra}).check()
    assert err.value.param == field
    with pytest.raises(ApiError) as err:
        ChatCompletionRequest.model_validate({"model": "ft", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).template_messages()
    assert err.value.param == "messages[0].content[0].type"
