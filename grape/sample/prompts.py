"""What every sampling backend shares: the prompt a source model sees, and cutting a generation at a stop string.

Instruct models (`prompt_format: chat`) are prompted through their chat template; base models with the plain
`Question:/Answer:` template and stop strings, so they answer once instead of writing the next question.
"""

from __future__ import annotations

from grape.template import Template


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Truncate at the earliest stop string; returns (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def build_prompt(tokenizer, template: Template, prompt_format: str, instruction: str) -> str:
    if prompt_format == "chat":
        if not tokenizer.chat_template:
            raise ValueError("prompt_format 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    return template.render_prompt(instruction)


def request_seed(seed: int, instruction_id: str) -> int:
    """One instruction's sampling seed (vllm, openai backends): from the experiment seed and the instruction id, so
    it does not depend on batching, order or which chunks a resumed run asks for."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}:{instruction_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF
