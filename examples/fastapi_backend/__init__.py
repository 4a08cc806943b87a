"""A FastAPI chatbot backend on one MemoryAgent: see app.py."""
