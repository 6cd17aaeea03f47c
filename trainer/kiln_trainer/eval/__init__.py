"""Measurements of a trained model's output (quality figures the demo prints)."""
