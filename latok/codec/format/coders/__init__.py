"""Entropy coders of a ``.latok`` file's records, registered by the codec byte that names them."""
