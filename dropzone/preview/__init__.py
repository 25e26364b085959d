"""``dropzone preview``: the real pipeline over a store and a zone that keep nothing."""
