"""The remote backend: generation on an OpenAI-compatible server (vLLM, llama-server) over
HTTP and server-sent events. No torch here: the tokenizer loads from its files alone."""
