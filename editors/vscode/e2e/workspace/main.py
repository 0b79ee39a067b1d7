"""Inventory bookkeeping."""

import os


class Store:
    def __init__(self, items=None):
        self.items = items or {}

    def get_count(self, key):
        """Return the count for key."""
        if key is None:
            return 0
        return self.items.get(key, 0)

    def get_value(self, key):
        """Return the value for key."""
        if key is None:
            return 0
        return self.items.get(key, 0) * 2
