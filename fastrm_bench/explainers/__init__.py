"""Explanation methods: each turns a generation into one relevancy map per generated token."""
