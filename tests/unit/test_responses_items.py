"""How ``/v1/responses`` input becomes stored items and a stored chain becomes chat messages, without a
model: the one conversion a request and a continued chain share."""

from __future__ import annotations

from ollama_magic.server.responses_api import ResponsesBody, input_items, items_to_messages


def test_text_input_is_one_user_message_item_with_an_id() -> None:
    [item] = input_items("Hello", "resp_abc")
    assert item == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}],
                    "id": "msg_abc_in0"}
    assert input_items([{"role": "assistant", "content": "Hi", "id": "mine"}], "resp_abc") == [
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hi"}], "type": "message", "id": "mine"}]


def test_a_stored_chain_becomes_the_messages_a_stateless_request_would_send() -> None:
    """A prior response's input and output items (reasoning, a function call, a message), then the new
    input, give the messages of the same conversation sent whole; only the new instructions lead."""
    prior_input = input_items("Weather in Paris?", "resp_1")
    prior_output = [
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "look it up"}]},
        {"id": "fc_1_0", "type": "function_call", "status": "completed", "call_id": "call_1", "name": "weather",
         "arguments": '{"city": "Paris"}'},
    ]
    new = input_items([{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}], "resp_2")
    messages = items_to_messages("Be brief.", prior_input + prior_output + new)
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "thinking": "look it up",
         "tool_calls": [{"id": "call_1", "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]
    whole = ResponsesBody(model="m", instructions="Be brief.", input=[
        {"role": "user", "content": "Weather in Paris?"}, *prior_output,
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
    assert items_to_messages(whole.instructions, input_items(whole.input, "resp_3")) == messages  # as the route does
