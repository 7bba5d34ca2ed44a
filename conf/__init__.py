"""Hydra configuration of fedcare (shipped as package data so installed copies find it)."""
