"""The seed's multi-user multi-round workload (TensorRT-LLM benchmarks/python/kv_cache_offload,
reference/engines.md §1.0): each user prefills a long context once (round 0), then each of
`rounds` rounds sends the previous input + previous output + `new_tokens` new tokens and asks for
`output_tokens` greedy tokens. All users of a round are queued together, in user order.

Token ids are drawn from a seeded `random.Random` (not torch), so a conversation's tokens, and so
its block ids, are the same on every PyTorch version and device.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    users: int
    rounds: int
    context_tokens: int
    new_tokens: int
    output_tokens: int
    vocab: int
    seed: int

    def _rng(self, *key: object) -> random.Random:
        return random.Random("kvscope:" + ":".join(str(k) for k in (self.seed,) + key))

    def context(self, user: int) -> list[int]:
        rng = self._rng("context", user)
        return [rng.randrange(self.vocab) for _ in range(self.context_tokens)]

    def new_input(self, user: int, round: int) -> list[int]:
        rng = self._rng("new", user, round)
        return [rng.randrange(self.vocab) for _ in range(self.new_tokens)]

    def prompt_tokens(self, round: int) -> int:
        """Prompt length of a round: round 0 is the context; each later round adds the previous
        output and the new input."""
        return self.context_tokens + round * (self.output_tokens + self.new_tokens)

    def max_request_tokens(self) -> int:
        return self.prompt_tokens(self.rounds) + self.output_tokens
