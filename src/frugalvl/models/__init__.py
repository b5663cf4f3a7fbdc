"""Model loaders, in one place: where weights come from, how they are checked and cached.

Nothing outside this package downloads anything.
"""
