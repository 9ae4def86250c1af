"""The built-in torch engine: a Llama decoder with random weights over a paged KV cache."""
