from lcia.data.prompts import IGNORE_INDEX, encode_for_training, encode_prompt, fit, prompt_messages
from lcia.data.schema import Example
from lcia.models.loading import SMOLLM2, load_tokenizer


def test_messages_put_the_instruction_in_the_system_turn():
    ex = Example("Add.", "2 and 3", "5")
    assert prompt_messages(ex) == [{"role": "system", "content": "Add."}, {"role": "user", "content": "2 and 3"}]
    assert prompt_messages(Example("Say hi.", "", "hi")) == [{"role": "user", "content": "Say hi."}]
    convo = ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"})
    assert prompt_messages(Example("a", "c", "d", messages=convo)) == list(convo)


def test_labels_cover_only_the_answer_and_its_end_of_turn():
    tok = load_tokenizer(SMOLLM2)
    ex = Example("Solve the arithmetic problem.", "What is 2 plus 3?", "5")
    enc = encode_for_training(tok, ex, max_length=256)
    prompt = encode_prompt(tok, ex)
    assert enc.input_ids[: len(prompt)] == prompt
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    assert enc.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tok.decode(answer) == "5<|im_end|>" and answer[-1] == tok.eos_token_id
    assert not enc.truncated


def test_long_prompts_keep_head_and_tail():
    tok = load_tokenizer(SMOLLM2)
    ex = Example("Answer the question.", "word " * 500 + "What is the last word?", "word")
    enc = encode_for_training(tok, ex, max_length=64)
    assert enc.truncated and len(enc.input_ids) == 64
    assert tok.decode(enc.input_ids).startswith("<|im_start|>system\nAnswer the question.")
    assert [t for t in enc.labels if t != IGNORE_INDEX] == tok("word", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert fit([1, 2, 3, 4, 5, 6], 4) == [1, 2, 5, 6]
