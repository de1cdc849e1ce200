"""vllm.logprobs: one token's log probability, as in real vLLM."""

from dataclasses import dataclass


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None
