"""Benchmarks: thin command lines over the stages (they may import any stage; nothing imports them)."""
