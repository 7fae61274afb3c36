"""Helpers shared by the relaymesh integration tests."""
