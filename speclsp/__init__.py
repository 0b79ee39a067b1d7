"""speclsp: inline code completions from a local causal LM, sped up by workspace n-gram drafting."""

__version__ = "0.1.0"
