"""The one place that turns (instruction, response) into text and tokens.

Scoring and SFT must agree on which tokens are "the response", or GRAPE would rank candidates by a
quantity the fine-tuning never optimises. The paper's plain template is
`Question: {instruction}\nAnswer: {response}` (no chat template). We split it at the token boundary
before the response: the prompt is `Question: {instruction}\nAnswer:` and the response text is
` {response}` (leading space). Prompt and response are tokenized *separately* and concatenated, so
no token straddles the boundary; the response tokens are exactly `tokenize(" " + response)` without
special tokens. Joined, the text is the paper's template to the character.

SFT appends the tokenizer's EOS token after the response so the model learns to stop; scoring counts
it only when `score_eos` is set (default off: the paper scores the response).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

DEFAULT_PROMPT = "Question: {instruction}\nAnswer:"
DEFAULT_RESPONSE = " {response}"


@dataclass(frozen=True)
class Template:
    prompt: str = DEFAULT_PROMPT
    response: str = DEFAULT_RESPONSE
    score_eos: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping) -> "Template":
        return cls(
            prompt=cfg.get("prompt", DEFAULT_PROMPT),
            response=cfg.get("response", DEFAULT_RESPONSE),
            score_eos=bool(cfg.get("score_eos", False)),
        )

    def render_prompt(self, instruction: str) -> str:
        return self.prompt.replace("{instruction}", instruction)

    def render_response(self, response: str) -> str:
        return self.response.replace("{response}", response)

    def tokenize(
        self, tokenizer, instruction: str, response: str, add_eos: bool = False
    ) -> tuple[list[int], list[int]]:
        """Return (prompt_ids, response_ids). The prompt gets the tokenizer's usual special tokens (BOS)."""
        return self.tokenize_rendered(
            tokenizer, self.render_prompt(instruction), self.render_response(response), add_eos
        )

    @staticmethod
    def tokenize_rendered(
        tokenizer, prompt: str, completion: str, add_eos: bool = False
    ) -> tuple[list[int], list[int]]:
        """`tokenize` for text already rendered (a selection's `prompt` and `completion`): the same split."""
        prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        response_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        if add_eos and tokenizer.eos_token_id is not None:
            response_ids.append(tokenizer.eos_token_id)
        return prompt_ids, response_ids

    def tokenize_prompts(self, tokenizer, instructions: list[str]) -> list[list[int]]:
        """`tokenize`'s prompt ids for many instructions at once (the fast tokenizer's batch API; same ids)."""
        if not instructions:
            return []
        texts = [self.render_prompt(i) for i in instructions]
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def tokenize_responses(self, tokenizer, responses: list[str], add_eos: bool = False) -> list[list[int]]:
        """`tokenize`'s response ids for many responses at once (same ids, plus EOS when asked)."""
        if not responses:
            return []
        out = [
            list(ids)
            for ids in tokenizer([self.render_response(r) for r in responses], add_special_tokens=False)["input_ids"]
        ]
        if add_eos and tokenizer.eos_token_id is not None:
            for ids in out:
                ids.append(tokenizer.eos_token_id)
        return out
