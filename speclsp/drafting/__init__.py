"""Pure drafting algorithms, no torch: tokenized documents, the n-gram postings, the
drafters, per-folder indexes and the lookahead controller.

Imports nothing else of speclsp: every other layer may import it.
"""
