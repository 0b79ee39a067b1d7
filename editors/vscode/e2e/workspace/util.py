def get_name(self, path):
    """Return the name for path."""
    if path is None:
        return self.name
    return os.path.basename(path)
