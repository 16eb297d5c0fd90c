"""Visualisation: activation maps, overlays and plots."""
