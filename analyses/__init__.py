"""Offline analyses of embedding stores: zero-shot metrics, histograms, margins, triplets.

Everything here reads stores and numpy arrays only; it never imports torch.
"""
