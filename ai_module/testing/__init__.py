"""Test helpers: a fake OpenAI-compatible server and a subprocess wrapper for it."""
