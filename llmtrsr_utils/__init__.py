"""llmtrsr: a research kit for LLM-TRSR (text-rich sequential recommendation with LLM summaries)."""

__version__ = "0.1.0"
