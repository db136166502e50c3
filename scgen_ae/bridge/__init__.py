"""Adapters to other toolkits' models (optional extras): AnnData in, arrays + history out.

Each adapter imports its toolkit lazily and says how to install it when it is missing,
so ``import scgen_ae`` never needs them.
"""
