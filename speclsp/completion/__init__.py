"""The completion pipeline: request -> prompt -> backend -> shown text.

May import `speclsp.backend` (the seam) and `speclsp.drafting`; a backend package only in
`loader.py`, lazily, so importing the pipeline does not import torch.
"""
