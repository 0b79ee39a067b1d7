"""The protocol and state layer: the language server, its transport, the session and its state.

May import `speclsp.completion`, `speclsp.backend` and `speclsp.drafting`; never torch (the
model is reached through `completion.loader`, which imports a backend lazily).
"""
