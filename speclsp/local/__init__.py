"""The local backend: the tensors. The model (torch and transformers live here and only
here), the speculative engine, the model registry, the draft model and the tiny test model.

May import `speclsp.backend` and `speclsp.drafting`; nothing above them.
"""
