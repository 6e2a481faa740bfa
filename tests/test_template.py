"""Prompt/response split: no token straddles the boundary; SFT and scoring tokenize identically."""

from __future__ import annotations

from grape.template import Template


def test_render_is_the_papers_template():
    t = Template()
    assert t.render_prompt("What is 2+2?") + t.render_response("4") == "Question: What is 2+2?\nAnswer: 4"


def test_tokenize_split(tiny):
    _, tok = tiny
    t = Template()
    p, r = t.tokenize(tok, "Tom has 3 apples.", "3 + 1 = 4. The answer is 4.")
    assert p[0] == tok.bos_token_id and tok.bos_token_id not in r
    assert r == tok(" 3 + 1 = 4. The answer is 4.", add_special_tokens=False)["input_ids"]
    assert (
        tok.decode(p + r, skip_special_tokens=True)
        == "Question: Tom has 3 apples.\nAnswer: 3 + 1 = 4. The answer is 4."
    )
    _, r_eos = t.tokenize(tok, "Tom has 3 apples.", "3 + 1 = 4. The answer is 4.", add_eos=True)
    assert r_eos == r + [tok.eos_token_id]


def test_custom_template():
    t = Template.from_config({"prompt": "Q: {instruction}\nA:", "response": " {response}", "score_eos": True})
    assert t.render_prompt("x") == "Q: x\nA:" and t.score_eos
