"""embedstore: versioned HDF5 stores of two-tower audio-text embeddings.

The store (:mod:`embedstore.store`) is the only thing the extraction stage and the
analyses share. Extraction lives in this package too but imports torch lazily, so a
plain ``pip install embedstore`` gives the store and every analysis.
"""

__version__ = "0.1.0"
