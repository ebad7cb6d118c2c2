"""Teach LLMs new knowledge: ICL, fine-tuning and ICL-augmented fine-tuning, compared."""
