"""Attention modules and their insertion into each backbone family."""
