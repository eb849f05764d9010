"""Metrics over maps and answers (functional forms; stateful classes where they accumulate)."""
