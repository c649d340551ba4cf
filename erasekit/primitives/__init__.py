"""Shared math of the erasure methods: prompt states, closed-form cross-attention edits."""
