"""Benchmarks that print ratios against anchors. Run all: python -m bench"""
