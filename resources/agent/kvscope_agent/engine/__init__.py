"""The built-in torch engine: a Llama decoder with random weights over a paged KV cache."""

# --offload-policy values (here, free of torch, for the CLI's option check and the engine's).
OFFLOAD_POLICIES = ("lazy", "lazy-keep", "write-through")
